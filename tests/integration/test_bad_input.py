"""Malformed and hostile inputs, sent to the real server: each gets a 4xx in the route's envelope (OpenAI's,
or Anthropic's on ``/v1/messages``), never a 5xx, and the server keeps serving afterwards."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import msgspec
import pytest

from tests.support import MODEL_ID, Server

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Hi"}]
ROUTES = ["/chat/completions", "/responses", "/messages"]  # the three wire formats that run a model
VALID = {  # a small valid body per route
    "/chat/completions": {"model": MODEL_ID, "messages": HI, "max_tokens": 4},
    "/completions": {"model": MODEL_ID, "prompt": "Hi", "max_tokens": 4},
    "/embeddings": {"model": MODEL_ID, "input": "Hi"},
    "/responses": {"model": MODEL_ID, "input": "Hi", "max_output_tokens": 16},
    "/messages": {"model": MODEL_ID, "messages": HI, "max_tokens": 4},
}
HUGE = "m" * 1_000_000


def post(server: Server, path: str, body: Any, content_type: str = "application/json") -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.key}", "Content-Type": content_type}
    content = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return httpx.post(server.base_url + path, headers=headers, content=content, timeout=120)


def error_of(response: httpx.Response, path: str) -> dict[str, Any]:
    """The error in the route's envelope: ``{"error": {message, type, param, code}}`` for OpenAI's routes,
    ``{"type": "error", "error": {type, message}}`` for Anthropic's (then ``param`` and ``code`` read None)."""
    assert response.headers["content-type"] == "application/json", response.text[:500]
    body = response.json()
    if path.startswith("/messages"):
        assert body["type"] == "error", body
        assert set(body["error"]) == {"type", "message"}, body
        error = {"param": None, "code": None, **body["error"]}
    else:
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        error = body["error"]
    assert isinstance(error["message"], str) and error["message"], body
    assert error["type"] in {"invalid_request_error", "not_found_error"}, body
    return error


@pytest.mark.parametrize("path", ROUTES)
def test_malformed_json_is_400(server, path):
    r = post(server, path, b'{"model": "x", "messages": [')
    assert r.status_code == 400
    error_of(r, path)


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("where", ["top", "inside"])
def test_a_body_nested_100000_deep_is_400(server, path, where):
    deep = b"[" * 100_000 + b"]" * 100_000
    body = deep if where == "top" else b'{"model": "' + MODEL_ID.encode() + b'", "messages": ' + deep + b"}"
    r = post(server, path, body)
    assert r.status_code == 400
    assert error_of(r, path)["message"] == "The request body is not valid JSON: it is nested too deeply."


@pytest.mark.parametrize("path", ROUTES)
def test_invalid_utf8_is_400(server, path):
    r = post(server, path, b'{"model": "\xff\xfe", "messages": [{"role": "user", "content": "\xc3("}]}')
    assert r.status_code == 400
    assert error_of(r, path)["message"] == "The request body is not valid JSON: it is not UTF-8."


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_a_body_that_is_not_json_is_415(server, path, content_type):
    r = post(server, path, VALID[path], content_type=content_type)
    assert r.status_code == 415
    error = error_of(r, path)
    assert content_type in error["message"]
    if not path.startswith("/messages"):
        assert error["code"] == "unsupported_media_type"


@pytest.mark.parametrize("path", ROUTES)
def test_an_empty_body_is_400(server, path):
    r = post(server, path, b"")
    assert r.status_code == 400
    assert "empty" in error_of(r, path)["message"]


def test_tool_call_arguments_that_are_not_json_are_400_naming_the_path(server):
    messages = [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    r = post(server, "/chat/completions", {"model": MODEL_ID, "messages": messages})
    assert r.status_code == 400
    error = error_of(r, "/chat/completions")
    assert error["param"] == "messages[1].tool_calls[0].arguments"
    assert "messages[1].tool_calls[0].arguments" in error["message"]


def test_function_call_arguments_that_are_not_json_are_400_on_responses(server):
    items = [
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{not json"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    ]
    r = post(server, "/responses", {"model": MODEL_ID, "input": items})
    assert r.status_code == 400
    assert error_of(r, "/responses")["param"] == "input[0].arguments"


@pytest.mark.parametrize("path", [*ROUTES, "/completions", "/embeddings"])
def test_nul_bytes_in_the_text_are_answered(server, path):
    body = dict(VALID[path])
    nul = "before\x00after"
    if "messages" in body:
        body["messages"] = [{"role": "user", "content": nul}]
    else:
        body["prompt" if path == "/completions" else "input"] = nul
    r = post(server, path, body)
    assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("path", "field"), [("/chat/completions", "stop"), ("/completions", "stop"), ("/messages", "stop_sequences")]
)
def test_10000_stop_sequences_are_400(server, path, field):
    r = post(server, path, {**VALID[path], field: [f"stop{i}" for i in range(10_000)]})
    assert r.status_code == 400
    error = error_of(r, path)
    assert f"$.{field}" in error["message"]
    if not path.startswith("/messages"):
        assert error["param"] == field


def _tools(path: str, n: int) -> list[dict[str, Any]]:
    parameters = {"type": "object", "properties": {"city": {"type": "string"}}}
    if path == "/messages":
        return [{"name": f"tool_{i}", "input_schema": parameters} for i in range(n)]
    if path == "/responses":
        return [{"type": "function", "name": f"tool_{i}", "parameters": parameters} for i in range(n)]
    return [{"type": "function", "function": {"name": f"tool_{i}", "parameters": parameters}} for i in range(n)]


@pytest.mark.parametrize("path", ROUTES)
def test_1000_tools_do_not_fit_the_context(server, path):
    """1,000 tools are accepted as a request, but their descriptions overflow the 2048-token context: a 400."""
    r = post(server, path, {**VALID[path], "tools": _tools(path, 1000)})
    assert r.status_code == 400
    error = error_of(r, path)
    assert "maximum context length" in error["message"]
    if not path.startswith("/messages"):
        assert error["code"] == "context_length_exceeded"


@pytest.mark.parametrize("path", [*ROUTES, "/completions", "/embeddings", "/messages/count_tokens"])
def test_a_1mb_model_id_is_404_and_not_echoed(server, path):
    r = post(server, path, {**VALID.get(path, VALID["/messages"]), "model": HUGE})
    assert r.status_code == 404
    error = error_of(r, path)
    assert len(r.content) < 2048
    assert error["message"].startswith("The model `mmm")


def test_a_long_model_id_in_the_path_is_404_and_not_echoed(server):
    # 60,000 characters: about the longest URL an HTTP client sends
    r = httpx.get(server.base_url + "/models/" + "m" * 60_000, headers={"Authorization": f"Bearer {server.key}"})
    assert r.status_code == 404
    assert error_of(r, "/models")["code"] == "model_not_found"
    assert len(r.content) < 2048


CHOOSE_HUGE = {"type": "function", "function": {"name": HUGE}}
FORMAT_HUGE = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": HUGE}}}


@pytest.mark.parametrize(
    ("path", "extra", "status"),
    [
        ("/chat/completions", {"messages": [{"role": HUGE, "content": "Hi"}]}, 400),
        ("/chat/completions", {"tools": _tools("/chat/completions", 1), "tool_choice": CHOOSE_HUGE}, 400),
        ("/chat/completions", {"logit_bias": {HUGE: 1}}, 400),
        ("/chat/completions", {"response_format": FORMAT_HUGE}, 400),
        ("/responses", {"previous_response_id": HUGE}, 404),
        ("/messages", {"tools": _tools("/messages", 1), "tool_choice": {"type": "tool", "name": HUGE}}, 400),
    ],
    ids=["role", "tool_choice", "logit_bias_key", "schema_type", "previous_response_id", "anthropic_tool_choice"],
)
def test_huge_values_are_not_echoed_in_errors(server, path, extra, status):
    r = post(server, path, {**VALID[path], **extra})
    assert r.status_code == status
    error_of(r, path)
    assert len(r.content) < 2048


@pytest.mark.parametrize("path", ["/chat/completions", "/completions"])
def test_logit_bias_with_100000_entries_is_400(server, path):
    r = post(server, path, {**VALID[path], "logit_bias": {str(i): 1 for i in range(100_000)}})
    assert r.status_code == 400
    assert error_of(r, path)["param"] == "logit_bias"


_BIG_PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + (10_000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
BAD_IMAGES = {  # a data: URL (or URL) and the words its 400 says; all refused before any model is touched
    "100 megapixels": ("data:image/png;base64," + base64.b64encode(_BIG_PNG).decode(), "10000x10000"),
    "truncated base64": ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAE", "not valid base64"),
    "webp": ("data:image/webp;base64,UklGRgAAAABXRUJQ", "image/webp"),
    "not an image": ("data:image/png;base64," + base64.b64encode(b"hello").decode(), "is not a PNG"),
    "url": ("https://example.com/cat.png", "data: URL"),
}


def _with_image(path: str, url: str) -> tuple[dict[str, Any], str]:
    """A body asking about the image in ``path``'s wire format, and the param its refusal names."""
    if path == "/chat/completions":
        content = [{"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {"url": url}}]
        return {**VALID[path], "messages": [{"role": "user", "content": content}]}, "messages[0].content[1]"
    if path == "/responses":
        content = [{"type": "input_text", "text": "Hi"}, {"type": "input_image", "image_url": url}]
        return {**VALID[path], "input": [{"role": "user", "content": content}]}, "input[0].content[1]"
    mime, _, data = url.removeprefix("data:").partition(";base64,")
    source = {"type": "base64", "media_type": mime, "data": data} if data else {"type": "url", "url": url}
    content = [{"type": "text", "text": "Hi"}, {"type": "image", "source": source}]
    return {**VALID[path], "messages": [{"role": "user", "content": content}]}, "messages[0].content[1].source"


@pytest.mark.parametrize("case", list(BAD_IMAGES))
@pytest.mark.parametrize("path", ROUTES)
def test_a_bad_image_is_400_naming_its_part_on_every_route(server, path, case):
    url, words = BAD_IMAGES[case]
    body, param = _with_image(path, url)
    r = post(server, path, body)
    assert r.status_code == 400, r.text
    error = error_of(r, path)
    assert words in error["message"], error
    assert error["param"] in (param, None), error  # Anthropic's envelope has no param: the message names it
    if error["param"] is None:
        assert param in error["message"], error


def test_the_server_still_answers_after_all_of_it(server):
    """Runs last in this module: none of the inputs above broke the server."""
    assert server.proc.poll() is None
    assert server.health()["status"] == "ok"
    r = post(server, "/chat/completions", VALID["/chat/completions"])
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]


def test_the_deprecated_functions_field_is_refused_not_ignored(server):
    body = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "Weather?"}],
        "functions": [{"name": "get_weather", "parameters": {"type": "object"}}],
    }
    r = httpx.post(
        server.base_url + "/chat/completions", headers={"Authorization": f"Bearer {server.key}"}, json=body, timeout=60
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "functions" and "tools" in r.json()["error"]["message"]


def test_a_body_field_named_as_a_server_dependency_is_a_400(server):
    """Litestar reads a validation error at a field named as a dependency (``images`` was one) as the server's own
    fault, a 500: no dependency may share a name with a body field. The fuzz found it on Ollama's ``images``."""
    r = httpx.post(
        server.url + "/api/generate",
        json={"model": MODEL_ID, "prompt": "", "images": {}},
        headers={"Authorization": f"Bearer {server.key}"},
        timeout=60,
    )
    assert r.status_code == 400 and "$.images" in r.json()["error"], r.text
