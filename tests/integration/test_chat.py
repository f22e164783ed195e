"""The chat route end to end: real server process, real model, the official openai SDK."""

from __future__ import annotations

import asyncio

import openai
import pytest

from edge_run.engine.slots import TILE
from tests.support import MODEL_ID

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "Name three colors of the rainbow."}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)


def test_completion_has_the_openai_shape(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=24, temperature=0)
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    assert r.model == MODEL_ID
    assert r.created > 0
    [choice] = r.choices
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 5
    assert r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_max_tokens_gives_length(client):
    r = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_tokens=5,
        temperature=0,
    )
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5


def test_max_completion_tokens_is_honoured(client):
    r = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_completion_tokens=3,
        temperature=0,
    )
    assert r.usage.completion_tokens == 3


def test_stream_reassembles_to_the_same_answer(client):
    kwargs = dict(model=MODEL_ID, messages=QUESTION, max_tokens=40, temperature=0, seed=7)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])


def test_stream_include_usage(client):
    chunks = list(
        client.chat.completions.create(
            model=MODEL_ID,
            messages=QUESTION,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = chunks[-1]
    assert last.choices == []
    assert last.usage.completion_tokens == 8
    assert last.usage.total_tokens == last.usage.prompt_tokens + 8
    assert chunks[-2].choices[0].finish_reason == "length"


def test_async_client_streams(server):
    async def go() -> str:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
        stream = await client.chat.completions.create(
            model=MODEL_ID, messages=QUESTION, max_tokens=16, temperature=0, stream=True
        )
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        await client.close()
        return "".join(parts)

    text = asyncio.run(go())
    assert text.strip()
    whole = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0).chat.completions.create(
        model=MODEL_ID, messages=QUESTION, max_tokens=16, temperature=0
    )
    assert text == whole.choices[0].message.content


def test_stop_sequence_cuts_the_answer(client):
    base = client.chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=40, temperature=0)
    text = base.choices[0].message.content
    words = [w for w in text.split() if len(w) > 3]
    assert len(words) >= 2, text
    stop = words[1]
    cut = client.chat.completions.create(model=MODEL_ID, messages=QUESTION, max_tokens=40, temperature=0, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]
    streamed = client.chat.completions.create(
        model=MODEL_ID, messages=QUESTION, max_tokens=40, temperature=0, stop=stop, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == text[: text.index(stop)]


def test_content_parts_and_system_message(client):
    r = client.chat.completions.create(
        model=MODEL_ID,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [{"type": "text", "text": "Say hi."}]},
        ],
        max_tokens=8,
        temperature=0,
        user="someone",
        extra_body={"unknown_field": 1},
    )
    # the same prompt and answer as the plain form: the parts are the text, the extra fields change nothing
    plain = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}],
        max_tokens=8,
        temperature=0,
    )
    assert r.choices[0].message.content
    assert r.choices[0].message.content == plain.choices[0].message.content
    assert r.usage.prompt_tokens == plain.usage.prompt_tokens


def test_seed_makes_sampling_reproducible(client):
    kwargs = dict(model=MODEL_ID, messages=QUESTION, max_tokens=20, temperature=1.0, seed=1234)
    a = client.chat.completions.create(**kwargs).choices[0].message.content
    b = client.chat.completions.create(**kwargs).choices[0].message.content
    assert a == b


def test_models_list_and_namespaced_retrieve(client):
    assert [m.id for m in client.models.list().data] == [MODEL_ID]
    m = client.models.retrieve(MODEL_ID)
    assert m.id == MODEL_ID
    assert m.object == "model"


def test_follow_up_turn_reuses_the_cached_prefix(client, server):
    history = [
        {
            "role": "system",
            "content": "You are a helpful assistant that answers questions about geography. " * 20,
        },
        {"role": "user", "content": "What is a river?"},
    ]
    first = client.chat.completions.create(model=MODEL_ID, messages=history, max_tokens=16, temperature=0)
    history += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "And a lake?"},
    ]
    before = server.health()["models"][0]["prompt_tokens_evaluated"]
    second = client.chat.completions.create(model=MODEL_ID, messages=history, max_tokens=8, temperature=0)
    evaluated = server.health()["models"][0]["prompt_tokens_evaluated"] - before
    cached = second.usage.prompt_tokens_details.cached_tokens
    # every row the turns share (the first prompt, whose rows were computed in calls of 64 or more), but the
    # last 64 of the new prompt, which it computes again in one call: the new message is shorter than 64 tokens
    assert first.usage.prompt_tokens > 192
    assert cached == second.usage.prompt_tokens - 64 if TILE == 64 else cached % 64 == 0  # not x86-64: blocks
    assert evaluated == second.usage.prompt_tokens - cached
