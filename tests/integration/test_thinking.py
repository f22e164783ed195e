"""Thinking models through the real server, the real model and the real SDKs.

SmolLM2's weights serve under real families' chat templates (``tests/fixtures/templates``), and each
answer is that family's exact raw output, forced with a GBNF ``grammar`` (llama.cpp's request field):
what is tested is the way from the model's tokens to the API's fields, streamed and whole.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import anthropic
import openai
import pytest

from tests.support import set_up, start_server

pytestmark = pytest.mark.integration

TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "templates"
FAMILIES = {
    "fam/qwen3": "Qwen-Qwen3-0.6B.jinja",
    "fam/deepseek-r1": "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
    "fam/gpt-oss": "openai-gpt-oss-120b.jinja",
}


def literal(text: str) -> str:
    """A GBNF grammar whose only sentence is ``text``."""
    return "root ::= " + json.dumps(text)


THOUGHT, ANSWER = "The user greets me. I greet back.", "Hello there!"
QWEN = literal(f"<think>\n{THOUGHT}\n</think>\n\n{ANSWER}")


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_path):
    home = tmp_path_factory.mktemp("thinking")
    set_up(home, "keys", "list")  # makes the home's folders
    tables = [
        f'[[model]]\nid = "{mid}"\npath = "{model_path}"\nchat_template = {json.dumps((TEMPLATES / name).read_text(), ensure_ascii=False)}\n'
        for mid, name in FAMILIES.items()
    ]
    (home / "config").mkdir(exist_ok=True)
    (home / "config" / "config.toml").write_text("\n".join(tables))
    server = start_server(home, "--slots", "1", "--max-loaded", "3")
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


def test_the_agents_sdk_gets_a_reasoning_item_and_a_tool_call_from_a_harmony_stream(server):
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    called: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        called.append(city)
        return f"sunny in {city}"

    async def run() -> object:
        model = OpenAIResponsesModel("fam/gpt-oss", openai.AsyncOpenAI(base_url=server.base_url, api_key=server.key))
        agent = Agent(
            name="weather",
            instructions="Answer with the weather.",
            model=model,
            tools=[get_weather],
            tool_use_behavior="stop_on_first_tool",
            model_settings=ModelSettings(max_tokens=300, temperature=0, extra_body={"grammar": HARMONY_CALL}),
        )
        result = Runner.run_streamed(agent, "Weather in Paris?")
        async for _ in result.stream_events():
            pass
        return result

    result = asyncio.run(run())
    kinds = [item.type for item in result.new_items]
    assert kinds == ["reasoning_item", "tool_call_item", "tool_call_output_item"]
    assert result.new_items[0].raw_item.content[0].text == f"{THOUGHT} I need the weather tool."
    assert called == ["Paris"] and result.final_output == "sunny in Paris"


def test_the_anthropic_sdk_gets_thinking_blocks(server):
    client = anthropic.Anthropic(base_url=server.url, api_key=server.key)
    setting = {"model": "fam/qwen3", "max_tokens": 1500, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    body = {**setting, "messages": [{"role": "user", "content": "hi"}], "extra_body": {"grammar": QWEN, "temperature": 0}}
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
            {"role": "assistant", "content": [{"type": "thinking", "thinking": THOUGHT, "signature": ""},
                                              {"type": "text", "text": ANSWER}]},  # fmt: skip
            {"role": "user", "content": "and again"},
        ],
    )
    assert follow.stop_reason in ("end_turn", "max_tokens")
