"""The Responses API (``/v1/responses``) end to end: real server, real model, the official openai SDK."""

from __future__ import annotations

import json
import re

import httpx
import msgspec
import openai
import pytest

from edge_run.api.responses.schemas import ResponseObject
from edge_run.api.responses.store import ResponseNotFound, ResponseStore
from tests.fakes import stream_that_fails
from tests.payloads import WEATHER as CHAT_WEATHER
from tests.payloads import validate
from tests.support import MODEL_ID

pytestmark = pytest.mark.integration

WEATHER = {"type": "function", **CHAT_WEATHER["function"]}  # the Responses API's flat tool shape
ASK = "What's the weather like in Paris right now?"

# OpenAI's published order: the lifecycle events around the output items, each item framed by added/done.
_TEXT_ITEM = (
    r"output_item\.added content_part\.added (output_text\.delta )*"
    r"output_text\.done content_part\.done output_item\.done "
)
_CALL_ITEM = r"output_item\.added (function_call_arguments\.delta )*function_call_arguments\.done output_item\.done "
PUBLISHED = re.compile(rf"created in_progress (({_TEXT_ITEM})|({_CALL_ITEM}))+(completed|incomplete) ")


def assert_published_order(events) -> None:
    kinds = [e.type for e in events]
    assert all(k.startswith("response.") for k in kinds), kinds
    assert PUBLISHED.fullmatch("".join(k.removeprefix("response.") + " " for k in kinds)), kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)


def test_create_has_the_response_shape(client):
    r = client.responses.create(
        model=MODEL_ID, input="Name three colors.", instructions="Be brief.", max_output_tokens=24, temperature=0
    )
    assert r.id.startswith("resp_")
    assert r.object == "response"
    assert r.model == MODEL_ID
    assert r.status in ("completed", "incomplete")
    assert (r.incomplete_details is not None) == (r.status == "incomplete")
    [item] = r.output
    assert item.type == "message" and item.role == "assistant" and item.id.startswith("msg_")
    assert item.content[0].type == "output_text"
    assert r.output_text.strip()
    assert r.instructions == "Be brief."
    assert r.usage.input_tokens > 5
    assert 0 < r.usage.output_tokens <= 24
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens


def test_stream_follows_the_published_sequence_and_matches_create(client):
    kwargs = dict(model=MODEL_ID, input="Say hello in French.", max_output_tokens=16, temperature=0)
    whole = client.responses.create(**kwargs)
    with client.responses.stream(**kwargs) as stream:
        events = list(stream)
    assert_published_order(events)
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    [done] = [e for e in events if e.type == "response.output_text.done"]
    assert deltas == done.text == whole.output_text
    final = events[-1].response
    assert final.status == whole.status
    assert final.output[0].content[0].text == whole.output_text
    assert events[0].response.id == final.id and events[0].response.status == "in_progress"


def test_forced_tool_call_streams_and_completes(client):
    with client.responses.stream(
        model=MODEL_ID,
        input=ASK,
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=80,
        temperature=0,
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert_published_order(events)
    assert events[-1].type == "response.completed"
    [call] = final.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id.startswith("call_")
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert deltas == done.arguments == call.arguments
    validate(json.loads(call.arguments), WEATHER["parameters"])


def test_tool_round_trip_by_previous_response_id(client):
    first = client.responses.create(
        model=MODEL_ID, input=ASK, tools=[WEATHER], tool_choice="required", max_output_tokens=80, temperature=0
    )
    [call] = first.output
    assert call.type == "function_call"
    validate(json.loads(call.arguments), WEATHER["parameters"])
    second = client.responses.create(
        model=MODEL_ID,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": '{"temperature": 18}'}],
        tools=[WEATHER],
        max_output_tokens=30,
        temperature=0,
    )
    assert second.previous_response_id == first.id
    assert second.usage.input_tokens > first.usage.input_tokens  # the first turn, its call and the result
    assert second.output and second.status in ("completed", "incomplete")
    third = client.responses.create(
        model=MODEL_ID, previous_response_id=second.id, input="Thanks!", max_output_tokens=8, temperature=0
    )
    alone = client.responses.create(model=MODEL_ID, input="Thanks!", max_output_tokens=8, temperature=0)
    assert third.usage.input_tokens > alone.usage.input_tokens + 20  # the whole chain comes along
    assert client.responses.retrieve(first.id).output[0].call_id == call.call_id
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_input_items_carry_a_whole_conversation(client):
    r = client.responses.create(
        model=MODEL_ID,
        input=[
            {"role": "developer", "content": "Answer in one word."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": ASK}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "It is sunny."}]},
            {"role": "user", "content": "And tomorrow?"},
        ],
        tools=[WEATHER],
        tool_choice="none",
        max_output_tokens=12,
        temperature=0,
    )
    assert r.output[0].type == "message"
    assert r.usage.input_tokens > 30


def test_json_schema_text_format(client):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    r = client.responses.create(
        model=MODEL_ID,
        input="What is 2+2?",
        text={"format": {"type": "json_schema", "name": "sum", "schema": schema, "strict": True}},
        max_output_tokens=40,
        temperature=0,
    )
    validate(json.loads(r.output_text), schema)
    assert r.text.format.type == "json_schema"


def test_store_false_is_not_kept(client):
    r = client.responses.create(model=MODEL_ID, input="Hi", store=False, max_output_tokens=4, temperature=0)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"previous_response_id": "resp_nope"}, "previous_response_id"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0]"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"background": True}, "background"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}]}, "input[0].arguments"),
        ({"temperature": 3}, "temperature"),
    ],
)
def test_bad_requests_name_the_parameter(server, body, param):
    r = httpx.post(
        server.base_url + "/responses",
        json={"model": MODEL_ID, "input": "Hi", **body},
        headers={"Authorization": f"Bearer {server.key}"},
        timeout=60,
    )
    assert r.status_code == (404 if param == "previous_response_id" else 400), r.text
    assert r.json()["error"]["param"] == param


def test_another_key_cannot_read_a_stored_response(client, server):
    other = server.extra["other_key"]
    r = client.responses.create(model=MODEL_ID, input="Hi", max_output_tokens=4, temperature=0)
    stranger = openai.OpenAI(base_url=server.base_url, api_key=other, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(r.id)
    assert client.responses.retrieve(r.id).id == r.id


def _response(rid: str) -> ResponseObject:
    return ResponseObject(id=rid, created_at=0, model="m", status="completed", output=[])


def test_the_store_is_bounded_by_count_and_age():
    now = [0.0]
    store = ResponseStore(limit=2, ttl=60, clock=lambda: now[0])
    for rid in ("a", "b", "c"):
        store.put(_response(rid), [], None)
    assert len(store) == 2
    with pytest.raises(ResponseNotFound):
        store.get("a", None)  # the oldest went first
    now[0] = 30
    store.put(_response("d"), [], None)
    now[0] = 61
    assert len(store) == 1  # b and c expired, d has 29 s left
    assert store.get("d", None).response.id == "d"
    with pytest.raises(ResponseNotFound):
        store.get("d", "another key")


def test_a_failure_mid_stream_sends_response_failed(tmp_path):
    text, _ = stream_that_fails(tmp_path, "/v1/responses", {"input": "hi"})
    frames = [f for f in text.split("\n\n") if f]
    kinds = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-1] == "response.failed"
    failed = msgspec.json.decode(frames[-1].split("data: ", 1)[1])["response"]
    assert failed["status"] == "failed" and failed["error"] == {"code": "server_error", "message": "boom"}
