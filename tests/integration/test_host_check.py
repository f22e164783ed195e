"""DNS rebinding, against the real server: a request whose Host names another machine gets 403."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration


def test_a_forged_host_is_refused_and_allowed_names_are_served(make_server):
    server = make_server("--allowed-host", "mybox.lan")
    auth = {"Authorization": f"Bearer {server.key}"}
    forged = httpx.get(server.base_url + "/models", headers={**auth, "Host": "evil.example.com"})
    assert forged.status_code == 403
    assert forged.json()["error"]["code"] == "host_not_allowed"
    for host in (f"localhost:{server.port}", f"127.0.0.1:{server.port}", f"mybox.lan:{server.port}"):
        assert httpx.get(server.base_url + "/models", headers={**auth, "Host": host}).status_code == 200, host
