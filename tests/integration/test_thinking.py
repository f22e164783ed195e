"""Thinking models through the real server, the real model and the real SDKs.

SmolLM2's weights serve under real families' chat templates (``tests/fixtures/templates``), and each
answer is that family's exact raw output, forced with a GBNF ``grammar`` (llama.cpp's request field):
what is tested is the way from the model's tokens to the API's fields, streamed and whole.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anthropic
import openai
import pytest

from tests.payloads import WEATHER
from tests.support import isolated_python, set_up, start_server

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "templates"
FAMILIES = {
    "fam/qwen3": "Qwen-Qwen3-0.6B.jinja",
    "fam/deepseek-r1": "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
    "fam/gpt-oss": "openai-gpt-oss-120b.jinja",
    "fam/qwen3-coder": "Qwen3-Coder.jinja",
    "fam/llama3": "meta-llama-Llama-3.1-8B-Instruct.jinja",
    "fam/mistral": "Mistral-Small-3.2-24B-Instruct-2506.jinja",
    "fam/deepseek-tools": "llama-cpp-deepseek-r1.jinja",
    "fam/granite": "ibm-granite-granite-3.3-2B-Instruct.jinja",
    "fam/gemma4": "google-gemma-4-31B-it.jinja",
}


def literal(text: str) -> str:
    """A GBNF grammar whose only sentence is ``text``."""
    return "root ::= " + json.dumps(text)


THOUGHT, ANSWER = "The user greets me. I greet back.", "Hello there!"
QWEN = literal(f"<think>\n{THOUGHT}\n</think>\n\n{ANSWER}")


def toml_string(path: Path) -> str:
    return json.dumps(path.read_text(), ensure_ascii=False)  # JSON's escapes are TOML's


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_path):
    home = tmp_path_factory.mktemp("thinking")
    set_up(home, "keys", "list")  # makes the home's folders
    tables = [
        f'[[model]]\nid = "{mid}"\npath = "{model_path}"\nchat_template = {toml_string(TEMPLATES / name)}\n'
        for mid, name in FAMILIES.items()
    ]
    (home / "config").mkdir(exist_ok=True)
    (home / "config" / "config.toml").write_text("\n".join(tables))
    server = start_server(home, "--slots", "1", "--ctx", "2048", "--max-loaded", str(len(FAMILIES)))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=server.key)


def test_chat_returns_the_thought_apart_whole_and_streamed(client):
    body = {"model": "fam/qwen3", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200, "temperature": 0}
    whole = client.chat.completions.create(**body, extra_body={"grammar": QWEN})
    message = whole.choices[0].message
    assert message.content == ANSWER
    assert message.model_extra["reasoning_content"] == message.model_extra["reasoning"] == THOUGHT
    details = whole.usage.completion_tokens_details
    assert 0 < details.reasoning_tokens < whole.usage.completion_tokens
    stream = client.chat.completions.create(
        **body, stream=True, stream_options={"include_usage": True}, extra_body={"grammar": QWEN}
    )
    thought, answer, usage = "", "", None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            thought += (choice.delta.model_extra or {}).get("reasoning_content") or ""
            answer += choice.delta.content or ""
    assert (thought, answer) == (THOUGHT, ANSWER)
    assert usage.completion_tokens_details.reasoning_tokens == details.reasoning_tokens


def test_a_template_that_opens_the_thought_itself(client):
    # DeepSeek-R1's prompt ends in `<think>\n` when thinking is on: the model writes only the closing tag
    answer = client.chat.completions.create(
        model="fam/deepseek-r1",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=200,
        temperature=0,
        extra_body={
            "grammar": literal(f"{THOUGHT}\n</think>\n\n{ANSWER}"),
            "chat_template_kwargs": {"enable_thinking": True},
        },
    )
    message = answer.choices[0].message
    assert (message.model_extra["reasoning_content"], message.content) == (THOUGHT, ANSWER)


def test_thinking_off_renders_the_familys_empty_thought_and_an_unknown_kwarg_is_named(client):
    r = client.chat.completions.with_raw_response.create(
        model="fam/qwen3", messages=[{"role": "user", "content": "hi"}], max_tokens=5, reasoning_effort="none"
    )
    assert r.http_response.status_code == 200
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="fam/qwen3",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"chat_template_kwargs": {"enable_thinkng": False}},
        )
    assert err.value.body["param"] == "chat_template_kwargs.enable_thinkng"


def test_langchain_chat_openai_reads_the_reasoning(server):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model="fam/qwen3",
        base_url=server.base_url,
        api_key=server.key,
        use_responses_api=True,
        max_tokens=200,
        temperature=0,
        extra_body={"grammar": QWEN},
    )
    reply = llm.invoke("hi")
    blocks = reply.content_blocks
    assert [b["reasoning"] for b in blocks if b["type"] == "reasoning"] == [THOUGHT]
    assert reply.text == ANSWER


HARMONY_CALL = literal(
    f"<|channel|>analysis<|message|>{THOUGHT} I need the weather tool.<|end|>"
    '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}'
)


AGENT = """
import asyncio, json, sys
import openai
from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

base_url, key, grammar = sys.argv[1:]
set_tracing_disabled(True)
called = []

@function_tool
def get_weather(city: str) -> str:
    \"\"\"The weather in a city.\"\"\"
    called.append(city)
    return f"sunny in {city}"

async def run():
    model = OpenAIResponsesModel("fam/gpt-oss", openai.AsyncOpenAI(base_url=base_url, api_key=key))
    agent = Agent(name="weather", instructions="Answer with the weather.", model=model, tools=[get_weather],
                  tool_use_behavior="stop_on_first_tool",
                  model_settings=ModelSettings(max_tokens=300, temperature=0, extra_body={"grammar": grammar}))
    result = Runner.run_streamed(agent, "Weather in Paris?")
    async for _ in result.stream_events():
        pass
    return result

result = asyncio.run(run())
print(json.dumps({
    "kinds": [item.type for item in result.new_items],
    "thought": result.new_items[0].raw_item.content[0].text,
    "called": called,
    "final": result.final_output,
}))
"""


def test_the_agents_sdk_gets_a_reasoning_item_and_a_tool_call_from_a_harmony_stream(server):
    python = isolated_python("openai-agents-0.24.0", "openai-agents==0.24.0")
    out = subprocess.run(
        [str(python), "-c", AGENT, server.base_url, server.key, HARMONY_CALL],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    result = json.loads(out.splitlines()[-1])
    assert result["kinds"] == ["reasoning_item", "tool_call_item", "tool_call_output_item"]
    assert result["thought"] == f"{THOUGHT} I need the weather tool."
    assert result["called"] == ["Paris"] and result["final"] == "sunny in Paris"


def test_the_anthropic_sdk_gets_thinking_blocks(server):
    client = anthropic.Anthropic(base_url=server.url, api_key=server.key)
    setting = {"model": "fam/qwen3", "max_tokens": 1500, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    forced = {"grammar": QWEN, "temperature": 0}  # the SDK has no `temperature` argument
    body = {**setting, "messages": [{"role": "user", "content": "hi"}], "extra_body": forced}
    message = client.messages.create(**body)
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert (message.content[0].thinking, message.content[1].text) == (THOUGHT, ANSWER)
    with client.messages.stream(**body) as stream:
        final = stream.get_final_message()
    assert [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None)) for b in final.content] == [
        ("thinking", THOUGHT),
        ("text", ANSWER),
    ]
    # the thought sent back in the next turn is taken, as Claude clients send it
    follow = client.messages.create(
        **{**setting, "max_tokens": 8},
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": THOUGHT, "signature": ""},
                    {"type": "text", "text": ANSWER},
                ],
            },
            {"role": "user", "content": "and again"},
        ],
    )
    assert follow.stop_reason in ("end_turn", "max_tokens")


ARGS = '{"city": "Paris"}'
# Each family's raw output for one call, as its models print it (llama.cpp's tests/test-chat.cpp has the same),
# and the route it is read through: every route meets several families.
HERMES = f'<tool_call>\n{{"name": "get_weather", "arguments": {ARGS}}}\n</tool_call>'
CODER = "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>"
SEP = "<\uff5ctool\u2581sep\uff5c>"  # DeepSeek's markers: fullwidth bars and lower blocks
BEGIN, END = "<\uff5ctool\u2581call\u2581begin\uff5c>", "<\uff5ctool\u2581call\u2581end\uff5c>"
DEEPSEEK = f"<\uff5ctool\u2581calls\u2581begin\uff5c>{BEGIN}function{SEP}get_weather\n```json\n{ARGS}\n```{END}"
HARMONY = "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>" + ARGS
CALLS = {
    "fam/qwen3": (f"<think>\nNeed the weather.\n</think>\n\n{HERMES}", "chat-stream"),
    "fam/qwen3-coder": (CODER, "responses"),
    "fam/llama3": (f'{{"name": "get_weather", "parameters": {ARGS}}}', "anthropic"),
    "fam/mistral": (f"[TOOL_CALLS]get_weather[ARGS]{ARGS}", "chat"),
    "fam/deepseek-tools": (f"Need the weather.\n</think>\n\n{DEEPSEEK}", "responses-stream"),  # the prompt opened it
    "fam/granite": (f'<|tool_call|>[{{"name": "get_weather", "arguments": {ARGS}}}]', "anthropic-stream"),
    "fam/gemma4": ('<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|>', "chat-stream"),
    "fam/gpt-oss": (f"<|channel|>analysis<|message|>Need the weather.<|end|>{HARMONY}", "chat"),
}


def call_via(server, route: str, model: str, raw: str) -> tuple[str, dict, str | None]:
    """The call's name and arguments, and the thought if one came, read through ``route``."""
    forced = {"grammar": literal(raw), "temperature": 0}
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    if route.startswith("chat"):
        client = openai.OpenAI(base_url=server.base_url, api_key=server.key)
        body = {"model": model, "messages": ask, "tools": [WEATHER], "max_tokens": 300, "extra_body": forced}
        if route == "chat":
            message = client.chat.completions.create(**body).choices[0].message
            [call] = message.tool_calls
            return call.function.name, json.loads(call.function.arguments), message.model_extra.get("reasoning_content")
        name, args, thought = "", "", ""
        for chunk in client.chat.completions.create(**body, stream=True):
            for choice in chunk.choices:
                thought += (choice.delta.model_extra or {}).get("reasoning_content") or ""
                for d in choice.delta.tool_calls or ():
                    assert d.index == 0
                    name += d.function.name or ""
                    args += d.function.arguments or ""
        return name, json.loads(args), thought or None
    if route.startswith("responses"):
        client = openai.OpenAI(base_url=server.base_url, api_key=server.key)
        tool = {"type": "function", **WEATHER["function"]}
        body = {"model": model, "input": ask, "tools": [tool], "max_output_tokens": 300, "extra_body": forced}
        if route == "responses":
            output = client.responses.create(**body).output
        else:
            with client.responses.stream(**body) as stream:
                output = stream.get_final_response().output
        [call] = [o for o in output if o.type == "function_call"]
        thoughts = [o.content[0].text for o in output if o.type == "reasoning"]
        return call.name, json.loads(call.arguments), thoughts[0] if thoughts else None
    client = anthropic.Anthropic(base_url=server.url, api_key=server.key)
    fn = WEATHER["function"]
    tool = {"name": fn["name"], "description": fn["description"], "input_schema": fn["parameters"]}
    body = {"model": model, "max_tokens": 300, "messages": ask, "tools": [tool], "extra_body": forced}
    if route == "anthropic":
        message = client.messages.create(**body)
    else:
        with client.messages.stream(**body) as stream:
            message = stream.get_final_message()
    assert message.stop_reason == "tool_use"
    [call] = [b for b in message.content if b.type == "tool_use"]
    thoughts = [b.thinking for b in message.content if b.type == "thinking"]
    return call.name, call.input, thoughts[0] if thoughts else None


@pytest.mark.parametrize("model", list(CALLS))
def test_each_familys_native_call_comes_out_as_the_apis_tool_call(server, model):
    raw, route = CALLS[model]
    name, args, thought = call_via(server, route, model, raw)
    assert (name, args) == ("get_weather", {"city": "Paris"})
    assert thought == ("Need the weather." if "Need the weather." in raw else None)


def test_json_output_of_a_thinking_model_is_held_after_its_thought(client):
    # the grammar lets the thought come first, free, and holds the answer after it to the schema
    schema = {"type": "object", "properties": {"greeting": {"type": "string"}}, "required": ["greeting"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "g", "schema": schema}}
    answer = client.chat.completions.create(
        model="fam/qwen3", messages=[{"role": "user", "content": "Greet me."}], max_tokens=60, temperature=0,
        response_format=fmt,
    )  # fmt: skip
    message = answer.choices[0].message
    assert isinstance(json.loads(message.content)["greeting"], str), message


def test_a_thought_over_its_budget_is_closed_and_the_answer_follows(client):
    # DeepSeek-R1's prompt opens the thought; after 6 tokens of it the engine writes the closing tag itself
    answer = client.chat.completions.create(
        model="fam/deepseek-r1",
        messages=[{"role": "user", "content": "Tell me a long story about a mill."}],
        max_tokens=40,
        temperature=0,
        extra_body={"reasoning_budget": 6, "chat_template_kwargs": {"enable_thinking": True}},
    )
    message, usage = answer.choices[0].message, answer.usage
    assert message.model_extra["reasoning_content"] and "</think>" not in (message.content or "")
    # the thought's 6 tokens and the closing tag's few
    assert 6 < usage.completion_tokens_details.reasoning_tokens <= 6 + 8 < usage.completion_tokens
