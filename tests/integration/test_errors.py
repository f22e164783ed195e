"""Every bad input gets OpenAI's error envelope with the right status, from the real server."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support import MODEL_ID

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Hi"}]


def envelope(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def post(server, body, key: str | None = "<server>", **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.key if key == '<server>' else key}"} if key else {}
    if isinstance(body, (bytes, str)):
        kwargs["content"] = body
        headers["Content-Type"] = "application/json"
    else:
        kwargs["json"] = body
    return httpx.post(server.base_url + "/chat/completions", headers=headers, timeout=60, **kwargs)


def test_health_needs_no_key(server):
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["models"][0]["id"] == MODEL_ID
    assert body["models"][0]["state"] == "loaded"


@pytest.mark.parametrize("key", [None, "er-not-a-real-key", ""])
def test_missing_or_wrong_key_is_401(server, key):
    r = post(server, {"model": MODEL_ID, "messages": HI}, key=key)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert envelope(r)["code"] == "invalid_api_key"
    assert httpx.get(server.base_url + "/models").status_code == 401


def test_sdk_sees_authentication_error(server):
    client = openai.OpenAI(base_url=server.base_url, api_key="er-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_malformed_json_is_400(server):
    r = post(server, b'{"model": "x", "messages": [')
    assert r.status_code == 400
    assert envelope(r)["type"] == "invalid_request_error"


def test_schema_violation_names_the_field(server):
    r = post(server, {"model": MODEL_ID, "messages": [{"role": "wizard", "content": "Hi"}]})
    assert r.status_code == 400
    err = envelope(r)
    assert err["param"] == "messages[0].role"
    assert "messages[0].role" in err["message"]
    r = post(server, {"model": MODEL_ID, "messages": HI, "temperature": 9})
    assert r.status_code == 400
    assert envelope(r)["param"] == "temperature"


def test_unknown_model_is_404_never_a_fallback(server):
    client = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="u-8105f7322477/other", messages=HI)
    assert info.value.body["code"] == "model_not_found"
    r = httpx.get(server.base_url + "/models/nope/nope", headers={"Authorization": f"Bearer {server.key}"})
    assert r.status_code == 404
    assert envelope(r)["code"] == "model_not_found"


def test_context_length_exceeded_is_400(server):
    r = post(server, {"model": MODEL_ID, "messages": HI, "max_tokens": 4000})
    assert r.status_code == 400
    assert envelope(r)["code"] == "context_length_exceeded"
    long = [{"role": "user", "content": "word " * 3000}]
    r = post(server, {"model": MODEL_ID, "messages": long, "stream": True})
    assert r.status_code == 400
    assert envelope(r)["code"] == "context_length_exceeded"


def test_body_too_large_is_413(server):
    r = post(server, b'{"model": "' + b"a" * (33 * 1024 * 1024) + b'"}')
    assert r.status_code == 413
    assert envelope(r)["message"] == f"The request body is too large: at most {32 * 1024 * 1024} bytes are accepted."


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 99}, "n"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}}},
            "response_format",
        ),
    ],
)
def test_parameters_it_cannot_honour_are_refused_not_ignored(server, extra, param):
    r = post(server, {"model": MODEL_ID, "messages": HI, **extra})
    assert r.status_code == 400
    assert envelope(r)["param"] == param


def test_image_parts_are_refused(server):
    content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    r = post(server, {"model": MODEL_ID, "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 400
    assert envelope(r)["param"] == "messages[0].content[0]"


def test_unknown_route_is_404_envelope(server):
    r = httpx.get(server.url + "/v2/whatever")
    assert r.status_code == 404
    assert envelope(r)["message"] == "There is no route GET /v2/whatever."  # edge-run's words, not Litestar's


def test_a_method_not_allowed_is_405_in_edge_run_s_words(server):
    r = httpx.delete(server.base_url + "/chat/completions", headers={"Authorization": f"Bearer {server.key}"})
    assert r.status_code == 405
    assert envelope(r)["message"] == "The method is not allowed: DELETE /v1/chat/completions."
