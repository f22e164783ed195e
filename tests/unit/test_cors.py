"""CORS: pages from the configured origins may call the API from a browser; others may not. A
preflight carries no key and is answered without one."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from edge_run.api.app import create_app
from edge_run.keys import KeyStore
from edge_run.server import app_services
from tests.fakes import FakeEngine, fake_registry

APP_ORIGIN = "https://app.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}


@pytest.fixture
def keyed(tmp_path):
    keys = KeyStore(tmp_path / "keys.sqlite3")
    key, _ = keys.create()
    return keys, key


def client_for(keys: KeyStore, origins: list[str]) -> TestClient:
    app = create_app(app_services(fake_registry(FakeEngine()), keys), cors_origins=origins)
    return TestClient(app, base_url="http://127.0.0.1")


def test_a_preflight_from_a_configured_origin_gets_the_cors_headers(keyed):
    keys, _ = keyed
    with client_for(keys, [APP_ORIGIN]) as client:
        r = client.options("/v1/chat/completions", headers={"Origin": APP_ORIGIN, **PREFLIGHT})
        assert r.status_code in (200, 204)
        assert r.headers["access-control-allow-origin"] == APP_ORIGIN
        assert "authorization" in r.headers["access-control-allow-headers"].lower()


def test_a_preflight_from_another_origin_gets_none(keyed):
    keys, _ = keyed
    with client_for(keys, [APP_ORIGIN]) as client:
        r = client.options("/v1/chat/completions", headers={"Origin": "https://evil.example", **PREFLIGHT})
        assert "access-control-allow-origin" not in r.headers


def test_the_answer_to_a_configured_origin_is_readable_and_still_needs_the_key(keyed):
    keys, key = keyed
    with client_for(keys, [APP_ORIGIN]) as client:
        r = client.get("/v1/models", headers={"Origin": APP_ORIGIN, "Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == APP_ORIGIN
        assert client.get("/v1/models", headers={"Origin": APP_ORIGIN}).status_code == 401


def test_without_origins_no_page_gets_cors_headers_but_the_preflight_is_no_401(keyed):
    keys, _ = keyed
    with client_for(keys, []) as client:
        r = client.options("/v1/chat/completions", headers={"Origin": APP_ORIGIN, **PREFLIGHT})
        assert r.status_code != 401
        assert "access-control-allow-origin" not in r.headers
