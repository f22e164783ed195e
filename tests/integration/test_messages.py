"""The Messages API (``/v1/messages``) end to end: real server, real model, the official anthropic SDK."""

from __future__ import annotations

import json
import re

import anthropic
import httpx
import msgspec
import pytest

from tests.fakes import stream_that_fails
from tests.payloads import WEATHER as CHAT_WEATHER
from tests.payloads import validate
from tests.support import MODEL_ID

pytestmark = pytest.mark.integration

SCHEMA = CHAT_WEATHER["function"]["parameters"]
WEATHER = {"name": "get_weather", "description": "Get the current weather for a city", "input_schema": SCHEMA}
ASK = [{"role": "user", "content": "What's the weather like in Paris right now?"}]
TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
GREEDY = {"temperature": 0}  # the SDK no longer types temperature; the API still takes it

# Anthropic's published order; pings may come anywhere after message_start.
PUBLISHED = re.compile(
    r"message_start ((ping )*content_block_start ((content_block_delta|ping) )*content_block_stop )+"
    r"(ping )*message_delta message_stop "
)


def sse_events(text: str) -> list[tuple[str, dict]]:
    out = []
    for frame in filter(None, text.split("\n\n")):
        head, data = frame.split("\n", 1)
        out.append((head.removeprefix("event: "), msgspec.json.decode(data.removeprefix("data: "))))
    return out


@pytest.fixture(scope="module")
def client(server):
    return anthropic.Anthropic(base_url=server.url, api_key=server.key, max_retries=0)


def post(server, path: str, body: dict, **headers: str) -> httpx.Response:
    headers = {"x-api-key": server.key, "anthropic-version": "2023-06-01", **headers}
    return httpx.post(server.url + path, json={"model": MODEL_ID, **body}, headers=headers, timeout=120)


def test_create_has_the_message_shape(client):
    m = client.messages.create(
        model=MODEL_ID,
        max_tokens=20,
        system=[{"type": "text", "text": "You are terse."}],
        messages=[{"role": "user", "content": [{"type": "text", "text": "Name three colors."}]}],
        extra_body=GREEDY,
    )
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant" and m.model == MODEL_ID
    [block] = m.content
    assert block.type == "text" and block.text.strip()
    assert m.stop_reason in ("end_turn", "max_tokens") and m.stop_sequence is None
    assert m.usage.input_tokens + m.usage.cache_read_input_tokens > 5
    assert 0 < m.usage.output_tokens <= 20


def test_stream_follows_the_published_sequence_and_matches_create(client, server):
    body = {"max_tokens": 16, "messages": [{"role": "user", "content": "Say hello in French."}]}
    whole = client.messages.create(model=MODEL_ID, **body, extra_body=GREEDY)
    r = post(server, "/v1/messages", {**body, **GREEDY, "stream": True})
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert all(name == data["type"] for name, data in events)
    assert PUBLISHED.fullmatch("".join(name + " " for name, _ in events)), [n for n, _ in events]
    assert "ping" in [name for name, _ in events]
    text = "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert text == whole.content[0].text
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == whole.stop_reason
    assert delta["usage"]["output_tokens"] == whole.usage.output_tokens


def test_sdk_stream_with_a_forced_tool(client):
    with client.messages.stream(
        model=MODEL_ID,
        max_tokens=80,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=ASK,
        extra_body=GREEDY,
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    partial = "".join(e.delta.partial_json for e in events if e.type == "content_block_delta")
    [call] = final.content
    assert call.type == "tool_use" and call.name == "get_weather" and call.id.startswith("toolu_")
    assert json.loads(partial) == call.input
    validate(call.input, SCHEMA)
    assert final.stop_reason == "tool_use"


def test_tool_use_round_trip(client):
    first = client.messages.create(
        model=MODEL_ID, max_tokens=80, tools=[WEATHER], tool_choice={"type": "any"}, messages=ASK, extra_body=GREEDY
    )
    [call] = first.content
    assert first.stop_reason == "tool_use" and call.type == "tool_use"
    validate(call.input, SCHEMA)
    second = client.messages.create(
        model=MODEL_ID,
        max_tokens=30,
        tools=[WEATHER],
        messages=[
            *ASK,
            {"role": "assistant", "content": [call.model_dump(include={"type", "id", "name", "input"})]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": '{"temperature": 18}'}],
            },
        ],
        extra_body=GREEDY,
    )
    total = second.usage.input_tokens + second.usage.cache_read_input_tokens
    assert total > first.usage.input_tokens + first.usage.cache_read_input_tokens  # the call and its result
    assert second.content and second.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_stop_sequences_say_which_one_matched(client):
    body = dict(model=MODEL_ID, max_tokens=40, messages=[{"role": "user", "content": "Name three colors."}])
    text = client.messages.create(**body, extra_body=GREEDY).content[0].text
    words = [w for w in text.split() if len(w) > 3]
    assert len(words) >= 2, text
    cut = client.messages.create(**body, stop_sequences=["zzzz", words[1]], extra_body=GREEDY)
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", words[1])
    assert cut.content[0].text == text[: text.index(words[1])]


def test_count_tokens_matches_the_prompt(client):
    kwargs = dict(model=MODEL_ID, messages=ASK, tools=[WEATHER], system="Be helpful.")
    counted = client.messages.count_tokens(**kwargs).input_tokens
    usage = client.messages.create(max_tokens=4, **kwargs, extra_body=GREEDY).usage
    assert counted == usage.input_tokens + usage.cache_read_input_tokens


def test_json_output_format(client):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    m = client.messages.create(
        model=MODEL_ID,
        max_tokens=40,
        messages=[{"role": "user", "content": "What is 2+2?"}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": schema}}, **GREEDY},
    )
    validate(json.loads(m.content[0].text), schema)


def test_bearer_auth_works_too(client, server):
    bearer = anthropic.Anthropic(base_url=server.url, auth_token=server.key, max_retries=0)
    body = dict(model=MODEL_ID, max_tokens=2, messages=ASK, extra_body=GREEDY)
    answer = bearer.messages.create(**body)
    assert answer.content and answer.content == client.messages.create(**body).content


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        ({"messages": ASK}, 400, "invalid_request_error"),  # no max_tokens
        ({"max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, 400, None),
        (
            {"max_tokens": 4, "messages": ASK, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
            400,
            None,
        ),
        ({"max_tokens": 4, "messages": ASK, "thinking": {"type": "enabled", "budget_tokens": 10}}, 400, None),  # < 1024
        ({"max_tokens": 4, "messages": [{"role": "user", "content": [TOOL_USE]}]}, 400, None),  # in a user message
        ({"max_tokens": 4, "messages": ASK, "temperature": 1.5}, 400, None),  # Anthropic's range is 0 to 1
        ({"model": "no/such-model", "max_tokens": 4, "messages": ASK}, 404, "not_found_error"),
    ],
)
def test_errors_use_anthropics_envelope(server, body, status, kind):
    r = post(server, "/v1/messages", body)
    assert r.status_code == status, r.text
    payload = r.json()
    assert payload["type"] == "error" and set(payload["error"]) == {"type", "message"}
    assert payload["error"]["type"] == (kind or "invalid_request_error")
    assert payload["error"]["message"]


def test_auth_errors_use_anthropics_envelope_and_openai_routes_keep_theirs(server):
    with pytest.raises(anthropic.AuthenticationError) as caught:
        anthropic.Anthropic(base_url=server.url, api_key="er-wrong", max_retries=0).messages.count_tokens(
            model=MODEL_ID, messages=ASK
        )
    body = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error" and body["error"]["message"]
    r = httpx.post(server.base_url + "/chat/completions", json={}, headers={"x-api-key": "er-wrong"}, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_a_failure_mid_stream_sends_an_error_event(tmp_path):
    text, _ = stream_that_fails(tmp_path, "/v1/messages", {"max_tokens": 8, "messages": ASK})
    events = sse_events(text)
    assert [name for name, _ in events] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "error",
    ]
    assert events[-1][1] == {"type": "error", "error": {"type": "api_error", "message": "boom"}}
