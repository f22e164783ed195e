"""The same request gives the same answer: cold, cached, partly cached, copied from another slot, streamed,
and (with ``--deterministic``) whatever runs beside it.

llama.cpp's CPU kernels take other arithmetic for one row of a sequence than for several, and which
way a near-tie falls depends on the CPU; so each check runs at two thread counts, and compares whole
answers, byte for byte, between cache states that the server reports (``cached_tokens``, ``prefix_copies``).
"""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.payloads import ASK, NO_EOS, WEATHER
from tests.support import MODEL_ID, wait_for

pytestmark = pytest.mark.integration

TOOL = {  # the request of the original report: a required tool call at temperature 0
    "messages": ASK,
    "tools": [WEATHER],
    "tool_choice": "required",
    "max_tokens": 80,
    "temperature": 0,
}
GREEDY = {
    "messages": [
        {"role": "system", "content": "You are a historian. You answer in short, plain sentences. " * 8},
        {"role": "user", "content": "Write three sentences about the history of bridges."},
    ],
    "max_tokens": 48,
    "temperature": 0,
    "logprobs": True,
    "top_logprobs": 3,
}
SEEDED = {
    "messages": [{"role": "user", "content": "Invent a name for a small coastal town and describe it."}],
    "max_tokens": 48,
    "temperature": 1.0,
    "seed": 5,
    "logprobs": True,
    "top_logprobs": 3,
}


def _logprob(t) -> tuple:
    return t.token, t.logprob, [(a.token, a.logprob) for a in t.top_logprobs]


def answer(client: openai.OpenAI, body: dict) -> tuple[str, int]:
    """The answer (text, tool calls, and the logprobs where asked: equal tokens can hide unequal logits)
    and how many prompt tokens came from the cache."""
    r = client.chat.completions.create(model=MODEL_ID, **body)
    choice = r.choices[0]
    calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
    logprobs = [_logprob(t) for t in choice.logprobs.content] if choice.logprobs else None
    return repr(
        (choice.message.content, calls, choice.finish_reason, logprobs)
    ), r.usage.prompt_tokens_details.cached_tokens


def streamed(client: openai.OpenAI, body: dict) -> str:
    """The same as :func:`answer`, put together from the stream's chunks."""
    content, args, name, finish, logprobs = "", "", None, None, []
    for chunk in client.chat.completions.create(model=MODEL_ID, stream=True, **body):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for call in choice.delta.tool_calls or []:
            name = name or call.function.name
            args += call.function.arguments or ""
        if choice.logprobs:
            logprobs += [_logprob(t) for t in choice.logprobs.content]
        finish = choice.finish_reason or finish
    calls = [(name, args)] if name else []
    return repr((content or None, calls, finish, logprobs if body.get("logprobs") else None))


def prompt_tokens(client: openai.OpenAI, body: dict) -> int:
    return client.chat.completions.create(model=MODEL_ID, **{**body, "max_tokens": 1}).usage.prompt_tokens


@pytest.mark.parametrize("threads", ["1", "2"])
@pytest.mark.cpu_numerics
def test_the_same_request_gives_the_same_answer_in_every_cache_state(make_server, threads):
    # server a: each request first cold, then fully cached, then streamed
    a = make_server("--threads", threads, "--slots", "2", "--ctx", "1024")
    ca = openai.OpenAI(base_url=a.base_url, api_key=a.key, max_retries=0, timeout=300)
    cold = {}
    for name, body in (("tool", TOOL), ("greedy", GREEDY), ("seeded", SEEDED)):
        a_cold, cached = answer(ca, body)
        if name == "tool":
            assert cached == 0  # the very first request on this server
        a_cached, cached = answer(ca, body)
        assert cached == prompt_tokens(ca, body) - 1  # all but the last prompt token, seeded ones too
        assert (name, a_cached) == (name, a_cold)
        assert (name, streamed(ca, body)) == (name, a_cold)
        cold[name] = a_cold

    # server b: the same requests, only partly cached (another request's prefix) or copied from a busy slot
    b = make_server("--threads", threads, "--slots", "2", "--ctx", "1024")
    cb = openai.OpenAI(base_url=b.base_url, api_key=b.key, max_retries=0, timeout=300)
    for name, body in (("seeded", SEEDED), ("greedy", GREEDY), ("tool", TOOL)):
        got, cached = answer(cb, body)
        if name != "seeded":
            assert 0 < cached < prompt_tokens(cb, body) - 1  # the chat template's head, shared with the first
        assert (name, got) == (name, cold[name])

    # the slot that holds GREEDY's prompt is kept busy: the next GREEDY request copies that KV into the other slot
    copies = b.health()["models"][0]["prefix_copies"]
    busy = {"model": MODEL_ID, **GREEDY, "max_tokens": 600, "stream": True, "logit_bias": NO_EOS}
    with (
        httpx.Client(timeout=120) as http,
        http.stream(
            "POST", b.base_url + "/chat/completions", json=busy, headers={"Authorization": f"Bearer {b.key}"}
        ) as held,
    ):
        lines = held.iter_lines()  # kept: a dropped iterator closes the connection
        next(lines)
        got, cached = answer(cb, GREEDY)
    assert b.health()["models"][0]["prefix_copies"] == copies + 1
    assert cached == prompt_tokens(cb, GREEDY) - 1
    assert got == cold["greedy"]


@pytest.mark.cpu_numerics
def test_a_follow_up_turn_reuses_the_answer_once_the_engine_has_refreshed_it(make_server):
    """An answer is decoded row by row; the idle engine prefills it again so the next turn can reuse it."""
    server = make_server("--slots", "2", "--ctx", "1024")
    client = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=300)
    reply = client.chat.completions.create(model=MODEL_ID, **GREEDY).choices[0].message.content
    turn = {**GREEDY, "messages": [*GREEDY["messages"], {"role": "assistant", "content": reply}]}
    turn["messages"].append({"role": "user", "content": "Now one more."})
    wait_for(lambda: server.health()["models"][0]["tokens_refreshed"] >= 40, 30, "the answer refreshed")
    got, cached = answer(client, turn)
    first_turn = prompt_tokens(client, GREEDY)
    assert cached > first_turn + 30  # the first turn and most of its answer
    # and the answer is the one a cold server gives
    cold = make_server("--slots", "2", "--ctx", "1024")
    cold_client = openai.OpenAI(base_url=cold.base_url, api_key=cold.key, max_retries=0, timeout=300)
    assert answer(cold_client, turn) == (got, 0)


async def _neighbours_then(server, body: dict, neighbours: list[tuple[dict, int]]) -> str:
    """Start each neighbour's stream and wait for its first token (so it holds a slot), then ask ``body``."""
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=300)
    try:
        streams = []
        for messages, max_tokens in neighbours:
            stream = await client.chat.completions.create(
                model=MODEL_ID, messages=messages, max_tokens=max_tokens, logit_bias=NO_EOS, stream=True
            )
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    break
            streams.append(stream)
        r = await client.chat.completions.create(model=MODEL_ID, **body)
        assert server.health()["models"][0]["slots_busy"] >= len(neighbours)  # they were still running
        for stream in streams:  # what they say is not checked: they leave now, not hundreds of tokens later
            await stream.close()
        return repr((r.choices[0].message.content, r.choices[0].finish_reason))
    finally:
        await client.close()


@pytest.mark.parametrize("threads", ["1", "2"])
def test_deterministic_answers_do_not_depend_on_neighbours(make_server, threads):
    server = make_server("--deterministic", "--threads", threads, "--slots", "4", "--ctx", "1024")
    assert server.health()["models"][0]["deterministic"] is True
    others = [
        ([{"role": "user", "content": "Count slowly from one to one hundred."}], 400),
        ([{"role": "system", "content": "You are terse. " * 40}, {"role": "user", "content": "Hi."}], 300),
        ([{"role": "user", "content": "List some rivers."}], 200),
    ]
    for body in (GREEDY, SEEDED):
        client = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=300)
        r = client.chat.completions.create(model=MODEL_ID, **body)
        alone = repr((r.choices[0].message.content, r.choices[0].finish_reason))
        for n in (1, 2, 3):
            assert asyncio.run(_neighbours_then(server, body, others[:n])) == alone, n
            wait_for(lambda: server.health()["models"][0]["slots_busy"] == 0, 60, "the neighbours' slots freed")
