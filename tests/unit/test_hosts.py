"""The Host check (DNS rebinding): addresses, localhost and allowed names pass; other names get 403."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from edge_run.api.app import create_app
from edge_run.api.http.hosts import host_allowed
from edge_run.server import app_services
from tests.fakes import FakeEngine, fake_registry

ALLOWED = frozenset({"mybox.lan"})


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.0.0.1:8080",
        "localhost:8080",
        "LOCALHOST",
        "app.localhost:3000",
        "[::1]:8080",
        "::1",
        "192.168.1.20:8080",
        "mybox.lan",
        "MyBox.lan:8080",
        "mybox.lan.",
    ],
)
def test_addresses_localhost_and_allowed_names_pass(host):
    assert host_allowed(host, ALLOWED)


@pytest.mark.parametrize(
    "host", ["evil.example.com", "evil.example.com:8080", "localhost.evil.com", "127.0.0.1.nip.io", "mybox", ""]
)
def test_other_names_are_refused(host):
    assert not host_allowed(host, ALLOWED)


def test_a_star_allows_any_name():
    assert host_allowed("anything.example", frozenset({"*"}))


@pytest.fixture
def client():
    app = create_app(app_services(fake_registry(FakeEngine()), None), allowed_hosts=["mybox.lan"])
    with TestClient(app) as c:
        yield c


def test_a_forged_host_gets_403_in_the_error_envelope_on_every_route(client):
    for path in ("/health", "/v1/models", "/"):
        r = client.get(path, headers={"Host": "evil.example.com"})
        assert r.status_code == 403, path
        error = r.json()["error"]
        assert error["code"] == "host_not_allowed" and error["type"] == "invalid_request_error"
        assert "--allowed-host evil.example.com" in error["message"]


def test_loopback_and_allowed_names_are_served(client):
    for host in ("127.0.0.1:8080", "localhost:8080", "mybox.lan:8080"):
        assert client.get("/health", headers={"Host": host}).status_code == 200, host


def test_every_static_asset_carries_the_pages_security_headers():
    with TestClient(create_app(app_services(fake_registry(FakeEngine()), None)), base_url="http://127.0.0.1") as client:
        for path in ("/", "/static/app.js", "/static/app.css", "/static/index.html"):
            r = client.get(path)
            assert r.status_code == 200, path
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
            assert r.headers["x-content-type-options"] == "nosniff", path
            assert r.headers["referrer-policy"] == "no-referrer", path
