"""Native tool-call formats, parsed from recorded outputs of each model family."""

from __future__ import annotations

import json

import pytest

from edge_run.serving.calls import ToolStream, parse_calls
from edge_run.serving.tools import check_schema, plan_tools

# What models of each family actually print when they call a function.
RECORDED = {  # name: (family, what the model printed)
    "qwen2.5 / hermes": (
        "hermes",
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>',
    ),
    "qwen3 with thinking": (
        "hermes",
        "<think>\nThe user wants the weather.\n</think>\n\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>',
    ),
    "llama 3.1 json": ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "c"}}'),
    "llama 3.1 python_tag": (
        "llama3",
        '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "c"}}',
    ),
    "mistral": ("mistral", '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}]'),
    "generic": ("generic", '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}'),
}


@pytest.mark.parametrize("family", list(RECORDED))
def test_each_family_parses_to_the_same_call(family):
    content, calls = parse_calls(RECORDED[family][1], RECORDED[family][0])
    [call] = calls
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris", "unit": "c"}
    assert call.id.startswith("call_")
    if family == "qwen3 with thinking":
        assert content is not None and "weather" in content
    else:
        assert content is None


def test_parallel_calls_hermes_and_mistral():
    first = '<tool_call>{"name": "a", "arguments": {}}</tool_call>'
    hermes = first + '\n<tool_call>{"name": "b", "arguments": {"x": 1}}</tool_call>'
    assert [c.name for c in parse_calls(hermes, "hermes")[1]] == ["a", "b"]
    mistral = '[TOOL_CALLS][{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"x": 1}}]'
    assert [c.name for c in parse_calls(mistral, "mistral")[1]] == ["a", "b"]


def test_plain_text_and_json_that_is_no_call_are_content():
    assert parse_calls("The weather is nice.", "generic") == ("The weather is nice.", [])
    assert parse_calls('{"not": "a call"}', "generic") == ('{"not": "a call"}', [])
    [cut] = parse_calls('{"name": "get_weather", "arguments": ', "generic")[1]  # cut off: still a call
    assert cut.name == "get_weather" and cut.arguments == ""


def test_generic_stream_sends_header_then_argument_fragments():
    stream = ToolStream("generic")
    text = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}'
    events = [e for i in range(0, len(text), 5) for e in stream.push(text[i : i + 5])]
    final, was_call = stream.finish()
    events += final
    assert was_call
    assert events[0].call is not None and events[0].call.name == "get_weather"
    fragments = [e.arguments for e in events if e.arguments]
    assert len(fragments) > 3
    assert json.loads("".join(fragments)) == {"city": "Paris", "unit": "c"}
    whole = ToolStream("generic")  # the whole answer at once takes the same path: the same call
    at_once = [*whole.push(text), *whole.finish()[0]]
    assert at_once[0].call is not None and at_once[0].call.name == "get_weather"
    assert at_once[0].call.arguments + "".join(e.arguments or "" for e in at_once[1:]) == "".join(fragments)


def test_native_stream_passes_text_through_and_streams_calls():
    stream = ToolStream("hermes")
    assert [e.content for e in stream.push("Hello")] == ["Hello"]
    native = ToolStream("hermes")
    assert native.push("<tool") == []
    events = native.push('_call>{"name": "f", "arguments": {}}</tool_call>')
    assert events[0].call.name == "f" and [e.arguments for e in events[1:]] == ["{}"]
    assert native.finish() == ([], True)


def test_plans():
    tools = [{"name": "f", "parameters": {"type": "object"}}, {"name": "g"}]
    assert plan_tools(tools, "none", native=False) is None
    auto = plan_tools(tools, None, native=False)
    assert auto.allow_text and "f" in auto.system_prompt and "anyOf" in auto.call_schema
    named = plan_tools(tools, "g", native=True)
    assert not named.allow_text and named.call_schema["properties"]["name"] == {"const": "g"}
    assert plan_tools(tools, "auto", native=True).call_schema is None


def test_schema_check_refuses_unknown_keywords():
    check_schema({"type": "object", "properties": {"a": {"type": "string", "maxLength": 3}}}, "$")
    with pytest.raises(ValueError, match="not"):
        check_schema({"type": "object", "properties": {"a": {"not": {}}}}, "$")
