"""Tool calls, structured outputs, logprobs and n>1 on the real model, through the openai SDK."""

from __future__ import annotations

import json

import openai
import pytest

from tests.payloads import ASK, WEATHER, validate
from tests.support import MODEL_ID

pytestmark = pytest.mark.integration

TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "PST"]}},
            "required": ["zone"],
        },
    },
}


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)


def only_call(response) -> tuple[str, dict]:
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert call.id.startswith("call_")
    return call.function.name, json.loads(call.function.arguments)


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_call_has_valid_arguments(client, choice):
    r = client.chat.completions.create(
        model=MODEL_ID, messages=ASK, tools=[WEATHER, TIME], tool_choice=choice, max_tokens=80, temperature=0
    )
    name, args = only_call(r)
    if isinstance(choice, dict):
        assert name == "get_weather"
    tool = {"get_weather": WEATHER, "get_time": TIME}[name]
    validate(args, tool["function"]["parameters"])


def test_required_call_is_valid_even_when_sampling(client):
    for seed in range(3):
        r = client.chat.completions.create(
            model=MODEL_ID,
            messages=ASK,
            tools=[TIME],
            tool_choice="required",
            max_tokens=60,
            temperature=1.2,
            seed=seed,
        )
        name, args = only_call(r)
        assert name == "get_time"
        validate(args, TIME["function"]["parameters"])


def test_auto_answers_plainly_or_calls_validly(client):
    for messages in (ASK, [{"role": "user", "content": "Say hello to me."}]):
        r = client.chat.completions.create(
            model=MODEL_ID, messages=messages, tools=[WEATHER], tool_choice="auto", max_tokens=40, temperature=0
        )
        choice = r.choices[0]
        if choice.message.tool_calls:
            _, args = only_call(r)
            validate(args, WEATHER["function"]["parameters"])
        else:
            assert choice.finish_reason in ("stop", "length")
            assert choice.message.content.strip()
            assert not choice.message.content.lstrip().startswith("{")


def test_none_never_calls(client):
    r = client.chat.completions.create(
        model=MODEL_ID, messages=ASK, tools=[WEATHER], tool_choice="none", max_tokens=20, temperature=0
    )
    assert r.choices[0].message.tool_calls is None
    assert r.choices[0].finish_reason != "tool_calls"


def test_streamed_tool_call_reassembles_to_the_same_call(client):
    kwargs = dict(model=MODEL_ID, messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=80, temperature=0)
    client.chat.completions.create(**kwargs)  # both requests below find the prompt cached (cold: test_determinism)
    whole = client.chat.completions.create(**kwargs).choices[0].message.tool_calls[0]
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    head = deltas[0]
    assert (head.index, head.type, head.function.name) == (0, "function", "get_weather")
    assert head.id.startswith("call_")
    assert all(d.id is None and d.function.name is None for d in deltas[1:])
    assert len(deltas) > 2  # the arguments arrive in fragments
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert arguments == whole.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_result_round_trip(client):
    first = client.chat.completions.create(
        model=MODEL_ID, messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=80, temperature=0
    )
    call = first.choices[0].message.tool_calls[0]
    messages = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 18, "sky": "clear"})},
    ]
    r = client.chat.completions.create(
        model=MODEL_ID, messages=messages, tools=[WEATHER], tool_choice="auto", max_tokens=40, temperature=0
    )
    assert r.usage.prompt_tokens > first.usage.prompt_tokens  # the call and its result are in the prompt
    if r.choices[0].message.tool_calls:
        validate(only_call(r)[1], WEATHER["function"]["parameters"])
    else:
        assert r.choices[0].message.content.strip()


SCHEMAS = [
    {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 30},
            "age": {"type": "integer"},
            "colors": {
                "type": "array",
                "items": {"type": "string", "enum": ["black", "white", "orange"]},
                "maxItems": 3,
            },
        },
        "required": ["name", "age", "colors"],
    },
    {
        "type": "object",
        "properties": {
            "city": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 30}, "capital": {"type": "boolean"}},
                "required": ["name", "capital"],
            },
            "rating": {"type": "string", "enum": ["low", "medium", "high"]},
        },
        "required": ["city", "rating"],
    },
    {
        "type": "object",
        "properties": {"answer": {"type": "integer"}, "sure": {"type": "boolean"}},
        "required": ["answer", "sure"],
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_json_schema_answers_parse_and_validate(client, schema):
    r = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Describe something as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}},
        max_tokens=150,
        temperature=0,
    )
    assert r.choices[0].finish_reason == "stop"
    validate(json.loads(r.choices[0].message.content), schema)


def test_json_object_mode_returns_an_object(client):
    r = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "What is 2+2? Reply in JSON with a key named answer."}],
        response_format={"type": "json_object"},
        max_tokens=60,
        temperature=0,
    )
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_logprobs_shape(client):
    r = client.chat.completions.create(
        model=MODEL_ID, messages=ASK, logprobs=True, top_logprobs=3, max_tokens=5, temperature=0
    )
    content = r.choices[0].logprobs.content
    assert len(content) == 5
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0
        assert bytes(t.bytes).decode() == t.token
        assert len(t.top_logprobs) == 3
        assert t.top_logprobs[0].token == t.token  # greedy: the top alternative is the chosen one
        assert [a.logprob for a in t.top_logprobs] == sorted((a.logprob for a in t.top_logprobs), reverse=True)
    streamed = client.chat.completions.create(
        model=MODEL_ID, messages=ASK, logprobs=True, top_logprobs=1, max_tokens=5, temperature=0, stream=True
    )
    tokens = [t.token for c in streamed if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert tokens == [t.token for t in content]


def test_n_choices_share_one_prompt_evaluation(client, server):
    kwargs = dict(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Invent a name for a pet dragon (" + "really " * 30 + "quickly)."}],
        n=3,
        max_tokens=12,
        temperature=1.0,
        seed=11,
    )
    before = server.health()["models"][0]["prompt_tokens_evaluated"]
    r = client.chat.completions.create(**kwargs)
    evaluated = server.health()["models"][0]["prompt_tokens_evaluated"] - before
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.content for c in r.choices)
    assert len({c.message.content for c in r.choices}) > 1
    assert evaluated <= r.usage.prompt_tokens  # once, not three times
    again = client.chat.completions.create(**kwargs)
    assert [c.message.content for c in again.choices] == [c.message.content for c in r.choices]


def test_n_streams_every_choice(client):
    chunks = list(
        client.chat.completions.create(
            model=MODEL_ID, messages=ASK, n=2, max_tokens=6, temperature=0.8, seed=3, stream=True
        )
    )
    finished = {c.choices[0].index for c in chunks if c.choices and c.choices[0].finish_reason}
    assert finished == {0, 1}
