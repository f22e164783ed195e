"""Fuzz every operation of the app's own OpenAPI schema against the real server with schemathesis.

Valid and invalid requests alike (schemathesis' positive and negative modes) must never get a 5xx, and
every error must carry the route's envelope: OpenAI's, or Anthropic's on ``/v1/messages...``. Half of
the generated bodies name the served model, so they get past the model lookup into translation,
tokenizing and the context check; a 128-token context keeps any request that runs the model short, and a
valid token limit is cut to a few tokens (``_cap_generation``): the fuzz is after the server's handling of a
request, which the first tokens already run through, not after the model's prose.

So the served chat model is ``bench/synth.py vlm``'s: a 2-layer, 256-wide llama of random weights with SmolLM2's
tokenizer and chat template (the same tokens, templates, grammars and checks as the test model), and a projector
for its width. Its steps take a fraction of SmolLM2's; every other module answers with SmolLM2 itself.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from edge_run.api.app import create_app
from edge_run.models.registry import ModelRegistry
from edge_run.server import app_services
from tests.payloads import synth_pair
from tests.support import MODEL_ID, Server, set_up, start_server

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 25  # random cases per operation, on top of schemathesis' examples and coverage cases
CTX = 128
CAP = 4  # tokens a valid request generates at most: sampling, stop strings, assembly and usage all run
_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# the token limit of each operation that generates, where it may be left out (or null) for "to the context's end"
_OPTIONAL_LIMITS = {"/v1/chat/completions": "max_tokens", "/v1/responses": "max_output_tokens"}
_OLLAMA_GENERATING = ("/api/chat", "/api/generate")
EMBEDDER, RERANKER = "fuzz/embedder", "fuzz/reranker"
_EMBEDDING = ("/v1/embeddings", "/api/embed", "/api/embeddings")
# a fuzzed body must not delete the served model, nor pull over it (DELETE /v1/models/{model_id} takes its id
# from the path, which is never aimed)
_NOT_AIMED = ("/api/delete", "/api/pull", "/v1/library/pulls")


@pytest.fixture(scope="module")
def fuzz_server(
    tmp_path_factory: pytest.TempPathFactory, model_path: Path, retrieval_models: dict[str, Path]
) -> Iterator[Server]:
    """A small context (128 tokens): a valid request finishes fast, a long prompt or ``max_tokens`` is a fast 400.
    The chat model takes images (its projector), so generated image parts meet a vision model's checks, not the
    refusal of a text-only one; beside it, an embedder and a reranker, for the bodies aimed at them."""
    home = tmp_path_factory.mktemp("fuzz-home")
    chat_model, mmproj = synth_pair("vlm", tmp_path_factory.mktemp("fuzz-vlm"), model_path)
    set_up(home, "models", "add", str(chat_model), "--id", MODEL_ID, "--mmproj", str(mmproj))
    set_up(home, "models", "add", str(retrieval_models["embed-cls"]), "--id", EMBEDDER)
    set_up(home, "models", "add", str(retrieval_models["rerank"]), "--id", RERANKER)
    # a pull reaches no Hub: this port refuses at once (nothing listens on the discard port)
    # nor a package index (a pull of `default`, the catalog's default model, fetches wheels)
    env = {
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_HOME": str(home / "hf-home"),
        "PIP_INDEX_URL": "http://127.0.0.1:9/",
    }
    server = start_server(home, "--model", MODEL_ID, "--ctx", str(CTX), "--slots", "2", "--max-loaded", "3", env=env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    """One connection for all the cases, as a client keeps one, instead of a new one per case. It reads no proxy
    settings from the environment (loopback needs none): requests would scan it on every case."""
    with requests.Session() as s:
        s.trust_env = False
        yield s


def _app_schema() -> dict[str, Any]:
    """The schema the server serves, built from the app itself: schemathesis needs it when pytest collects the
    tests (its loader that waits for a fixture breaks on pytest 9), before any server runs.
    ``test_the_server_serves_this_schema`` checks it is the one served."""
    registry = ModelRegistry([], lambda spec: None, cost=lambda spec: 0)  # type: ignore[arg-type, return-value]
    app = create_app(app_services(registry, None))
    return app.openapi_schema.to_schema()


APP_SCHEMA = _app_schema()
schema = schemathesis.openapi.from_dict(APP_SCHEMA)


def test_the_server_serves_this_schema(fuzz_server: Server) -> None:
    r = httpx.get(fuzz_server.url + "/openapi/openapi.json", headers=_auth(fuzz_server), timeout=30)
    assert r.status_code == 200
    assert r.json() == APP_SCHEMA
    operations = {f"{method.upper()} {path}" for path, item in APP_SCHEMA["paths"].items() for method in item}
    assert operations >= {  # each gets its own fuzz test
        "POST /v1/chat/completions",
        "POST /v1/audio/transcriptions",
        "POST /v1/completions",
        "POST /v1/embeddings",
        "POST /v1/rerank",
        "POST /rerank",
        "POST /v1/responses",
        "GET /v1/responses/{response_id}",
        "DELETE /v1/responses/{response_id}",
        "POST /v1/messages",
        "POST /v1/messages/count_tokens",
        "GET /v1/models",
        "GET /v1/models/{model_id}",
        "GET /v1/usage",
        "GET /metrics",
        "GET /health",
        "POST /api/chat",
        "POST /api/generate",
        "POST /api/embed",
        "POST /api/embeddings",
        "GET /api/tags",
        "POST /api/show",
        "GET /api/ps",
        "POST /api/pull",
        "DELETE /api/delete",
        "POST /api/copy",
        "GET /api/version",
        "GET /v1/library",
        "GET /v1/library/pulls",
        "POST /v1/library/pulls",
        "DELETE /v1/library/pulls/{model}",
        "POST /v1/models/{path}",
        "DELETE /v1/models/{model_id}",
    }


def _auth(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.key}"}


def _aim_at_the_model(case: Any) -> None:
    """Half the bodies (chosen by their content, so a replay picks the same) name a served model that serves
    their route: the reranker for rerank, the chat model or the embedder for embeddings, else the chat model."""
    body = case.body
    path = case.operation.path
    if path in _NOT_AIMED:
        return
    if isinstance(body, dict) and isinstance(body.get("model"), str) and (pick := zlib.crc32(repr(body).encode())) % 2:
        if path.endswith("/rerank"):
            body["model"] = RERANKER
        else:
            body["model"] = EMBEDDER if path in _EMBEDDING and pick % 4 == 3 else MODEL_ID


def _cap_generation(case: Any) -> None:
    """Valid token limits that fit the context become at most ``CAP``; a limit left out (or null) becomes ``CAP``
    too, except in one body of eight, which keeps the no-limit path (generate to the context's end). Invalid
    limits (0, negative, not an integer) and ones past the context stay as they are: they must be a 400.
    Ollama's ``options.num_predict`` is cut the same way; there a negative one means no limit, and becomes ``CAP``
    too (the body of eight that keeps no limit covers that path)."""
    body = case.body
    if not isinstance(body, dict):
        return
    if case.operation.path in _OLLAMA_GENERATING:  # Ollama's limit: ``options.num_predict``, negative for none
        options = body.get("options")
        if options is None and zlib.crc32(b"cap" + repr(body).encode()) % 8:
            body["options"] = options = {}
        if isinstance(options, dict):
            value = options.get("num_predict")
            if value is None or (type(value) is int and (CAP < value or value < 0)):
                if value is not None or zlib.crc32(b"cap" + repr(body).encode()) % 8:
                    options["num_predict"] = CAP
        return
    for name in _LIMITS:
        value = body.get(name)
        if type(value) is int and CAP < value <= CTX:
            body[name] = CAP
    limit = _OPTIONAL_LIMITS.get(case.operation.path)
    if limit and all(body.get(name) is None for name in _LIMITS) and zlib.crc32(b"cap" + repr(body).encode()) % 8:
        body[limit] = CAP


def _check_envelope(path: str, response: Any) -> None:
    if response.status_code < 400:
        return
    assert response.headers["content-type"] == ["application/json"], response.text[:500]
    body = response.json()
    if path.startswith("/api/"):  # Ollama's shape
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
        return
    if path.startswith("/v1/messages"):
        assert body["type"] == "error", body
        assert set(body["error"]) == {"type", "message"}, body
    else:
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_no_input_gets_a_server_error(case: Any, fuzz_server: Server, session: requests.Session) -> None:
    _aim_at_the_model(case)
    _cap_generation(case)
    response = case.call(base_url=fuzz_server.url, session=session, headers=_auth(fuzz_server), timeout=120)
    case.validate_response(response, checks=[not_a_server_error])
    _check_envelope(case.operation.path, response)


def test_server_still_answers_after_the_fuzz(fuzz_server: Server) -> None:
    assert fuzz_server.proc.poll() is None, fuzz_server.log.read_text()[-4000:]
    assert httpx.get(fuzz_server.url + "/health", timeout=10).status_code == 200
    r = httpx.post(
        fuzz_server.base_url + "/chat/completions",
        headers=_auth(fuzz_server),
        json={"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]
