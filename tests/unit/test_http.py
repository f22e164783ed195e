"""The HTTP layer over a fake engine: auth guard, error mapping, SSE framing. Fast, no model."""

from __future__ import annotations

import msgspec
import pytest
from litestar.testing import TestClient

from edge_run.api.app import create_app
from edge_run.engine import Chunk
from edge_run.errors import EngineFailure
from edge_run.keys import KeyStore
from tests.fakes import FakeEngine, fake_registry


@pytest.fixture
def setup(tmp_path):
    keys = KeyStore(tmp_path / "keys.sqlite3")
    key, _ = keys.create()
    engine = FakeEngine()
    app = create_app(fake_registry(engine), keys, max_body_bytes=4096)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client, engine


BODY = {"model": "fake/model", "messages": [{"role": "user", "content": "hi"}]}


def test_json_completion(setup):
    client, _ = setup
    r = client.post("/v1/chat/completions", json=BODY)
    assert r.status_code == 200
    body = r.json()
    assert body["choices"][0]["message"] == {"content": "Hello", "role": "assistant", "tool_calls": None}
    assert body["usage"]["total_tokens"] == 5


def test_sse_frames(setup):
    client, engine = setup
    r = client.post("/v1/chat/completions", json={**BODY, "stream": True, "stream_options": {"include_usage": True}})
    assert r.headers["content-type"].startswith("text/event-stream")
    frames = [f for f in r.text.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames)
    assert frames[-1] == "data: [DONE]"
    chunks = [msgspec.json.decode(f[6:]) for f in frames[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Hello"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert engine.generations[-1].cancelled  # the slot is always handed back


def test_engine_failure_is_500_without_internals_and_the_server_keeps_serving(setup):
    client, engine = setup
    engine.fail = RuntimeError("segfault-ish detail at 0xdeadbeef")
    r = client.post("/v1/chat/completions", json=BODY)
    assert r.status_code == 500
    assert "0xdeadbeef" not in r.text
    assert r.json()["error"]["type"] == "server_error"
    engine.fail = None
    assert client.post("/v1/chat/completions", json=BODY).status_code == 200


def test_failure_mid_stream_is_reported_in_band(setup):
    client, engine = setup
    engine.chunks = [
        Chunk(text="Hel", completion_tokens=1),
        Chunk(finish_reason="error", error=EngineFailure("boom")),
    ]
    r = client.post("/v1/chat/completions", json={**BODY, "stream": True})
    frames = [f for f in r.text.split("\n\n") if f]
    assert msgspec.json.decode(frames[-1][6:])["error"]["code"] == "engine_failure"


def test_guard_and_health(setup):
    client, _ = setup
    assert client.get("/health").status_code == 200
    r = client.get("/v1/models", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_openapi_schema_documents_the_chat_route(setup):
    client, _ = setup
    schema = client.get("/openapi/openapi.json").json()
    assert "/v1/chat/completions" in schema["paths"]
    assert "ChatCompletionRequest" in str(schema["components"])


def test_body_limit_is_413(setup):
    client, _ = setup
    r = client.post("/v1/chat/completions", content=b"{" + b" " * 5000 + b"}")
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"
