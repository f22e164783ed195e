"""The HTTP layer over a fake engine: auth guard, error mapping, SSE framing. Fast, no model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from edge_run.api.app import create_app
from edge_run.engine import Chunk
from edge_run.errors import EngineFailure
from edge_run.keys import KeyStore
from edge_run.models.registry import ModelRegistry
from edge_run.server import app_services
from tests.fakes import FakeEngine, FakeGeneration, fake_registry


@pytest.fixture
def setup(tmp_path):
    keys = KeyStore(tmp_path / "keys.sqlite3")
    key, _ = keys.create()
    engine = FakeEngine()
    app = create_app(app_services(fake_registry(engine), keys), max_body_bytes=4096)
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


def _client(tmp_path: Path, engine: FakeEngine, **key: Any) -> tuple[TestClient, ModelRegistry]:
    keys = KeyStore(tmp_path / "keys.sqlite3")
    secret, _ = keys.create(**key)
    registry = fake_registry(engine)
    client = TestClient(create_app(app_services(registry, keys)), base_url="http://127.0.0.1")
    client.headers["Authorization"] = f"Bearer {secret}"
    return client, registry


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {**BODY, "functions": [{"name": "f"}]}, "functions"),
        ("/v1/chat/completions", {**BODY, "tool_choice": "required"}, "tool_choice"),
        ("/v1/chat/completions", {**BODY, "logit_bias": {"x": 1}}, "logit_bias"),
        (
            "/v1/chat/completions",
            {
                **BODY,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "n", "schema": {"type": "object", "not": {}}},
                },
            },
            "response_format",
        ),
        ("/v1/completions", {"model": "fake/model", "prompt": "hi", "suffix": "!"}, "suffix"),
        ("/v1/embeddings", {"model": "fake/model", "input": "hi", "dimensions": 8}, "dimensions"),
        ("/v1/responses", {"model": "fake/model", "input": "hi", "tool_choice": "required"}, "tool_choice"),
        (
            "/v1/messages",
            {
                "model": "fake/model",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
                "tool_choice": {"type": "any"},
            },
            "tool_choice",
        ),
    ],
)
def test_a_bad_body_is_refused_before_its_model_loads(tmp_path, path, body, param):
    """A 400 must not load (or evict another model for) the model it names."""
    engine = FakeEngine()
    loads: list[int] = []

    async def load() -> None:
        loads.append(1)

    engine.load = load  # type: ignore[method-assign]
    client, registry = _client(tmp_path, engine)
    with client:
        r = client.post(path, json=body)
        assert r.status_code == 400, r.text
        assert param in r.text
        assert registry.entry("fake/model").status == "unloaded" and loads == []
        assert engine.generations == []


def test_refused_bodies_take_no_place_under_the_rpm_limit(tmp_path):
    """Admission runs after validation: a 415, a malformed body or a 400 does not use up a request of the minute."""
    client, _ = _client(tmp_path, FakeEngine(), rpm=1)
    with client:
        assert (
            client.post("/v1/chat/completions", content=b"hi", headers={"content-type": "text/plain"}).status_code
            == 415
        )
        assert client.post("/v1/chat/completions", content=b'{"model": ').status_code == 400
        assert client.post("/v1/chat/completions", json={"model": "fake/model"}).status_code == 400
        assert client.post("/v1/chat/completions", json={**BODY, "functions": [{}]}).status_code == 400
        ok = client.post("/v1/chat/completions", json=BODY)
        assert ok.status_code == 200, ok.text
        assert ok.headers["x-ratelimit-remaining-requests"] == "0"
        assert client.post("/v1/chat/completions", json=BODY).status_code == 429  # the limit itself still holds


def test_a_stop_sequence_is_told_by_the_engine_without_asking_for_logprobs(tmp_path):
    """Anthropic's ``stop_sequence`` comes from ``Chunk.stop``: asking for logprobs would cost a full-vocabulary
    log-softmax per token and turn device sampling off."""
    engine = FakeEngine()
    engine.chunks = [
        Chunk(text="one, two", completion_tokens=2, prompt_tokens=3),
        Chunk(completion_tokens=3, prompt_tokens=3, finish_reason="stop", stop="three"),
    ]
    options: list[dict[str, Any]] = []
    generate = engine.generate

    async def recording(prompt: list[int], spec: Any, **kwargs: Any) -> FakeGeneration:
        options.append(kwargs)
        return await generate(prompt, spec, **kwargs)

    engine.generate = recording  # type: ignore[method-assign]
    body = {
        "model": "fake/model",
        "max_tokens": 9,
        "stop_sequences": ["four", "three"],
        "messages": [{"role": "user", "content": "count"}],
    }
    client, _ = _client(tmp_path, engine)
    with client:
        r = client.post("/v1/messages", json=body)
        assert r.status_code == 200, r.text
        assert (r.json()["stop_reason"], r.json()["stop_sequence"]) == ("stop_sequence", "three")
        frames = client.post("/v1/messages", json={**body, "stream": True}).text
        delta = next(f for f in frames.split("\n\n") if f.startswith("event: message_delta"))
        assert msgspec.json.decode(delta.split("data: ", 1)[1])["delta"] == {
            "stop_reason": "stop_sequence",
            "stop_sequence": "three",
        }
        engine.chunks[-1] = Chunk(completion_tokens=3, prompt_tokens=3, finish_reason="stop")  # end of generation
        assert client.post("/v1/messages", json=body).json()["stop_reason"] == "end_turn"
    assert [o["top_logprobs"] for o in options] == [None, None, None]
    assert [o["stops"] for o in options] == [("four", "three")] * 3
