"""Many clients at once: nobody is cut off, the queue pushes back, disconnects free their slot."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from edge_run.engine import Engine, EngineOptions, SamplerSpec
from tests.payloads import NO_EOS
from tests.support import MODEL_ID, Server, set_up, share_of_cores, start_server, stream_in_slot_order, wait_for

pytestmark = pytest.mark.integration


def prompts(n: int) -> list[list[dict]]:
    topics = [
        "cats",
        "the sea",
        "mountains",
        "bread",
        "trains",
        "music",
        "winter",
        "stars",
        "rivers",
        "clocks",
    ]
    return [[{"role": "user", "content": f"Tell me one fact about {topics[i % len(topics)]}."}] for i in range(n)]


async def stream_one(client: openai.AsyncOpenAI, messages, max_tokens: int) -> tuple[str, str | None]:
    stream = await client.chat.completions.create(
        model=MODEL_ID, messages=messages, max_tokens=max_tokens, temperature=0, stream=True
    )
    parts, finish = [], None
    async for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    return "".join(parts), finish


def run_concurrently(server, messages_list, max_tokens: int) -> list[tuple[str, str | None]]:
    async def go():
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=300)
        try:
            return await asyncio.gather(*(stream_one(client, m, max_tokens) for m in messages_list))
        finally:
            await client.close()

    return asyncio.run(go())


@pytest.mark.cpu_numerics
def test_four_streaming_clients_all_complete_and_match_solo_answers(server):
    msgs = prompts(4)
    solo = [run_concurrently(server, [m], 32)[0] for m in msgs]
    together = run_concurrently(server, msgs, 32)
    for (text, finish), (solo_text, solo_finish) in zip(together, solo, strict=True):
        assert finish in ("stop", "length")
        assert text.strip()
        assert (text, finish) == (solo_text, solo_finish)


def test_more_clients_than_slots_all_complete(server):
    assert server.health()["models"][0]["slots_total"] < 6
    results = run_concurrently(server, prompts(6), 24)
    assert len(results) == 6
    for text, finish in results:
        assert finish in ("stop", "length")
        assert text.strip()


def _open_stream(server, max_tokens: int) -> tuple[httpx.Client, httpx.Response]:
    client = httpx.Client(timeout=60)
    body = {
        "model": MODEL_ID,
        "messages": prompts(1)[0],
        "max_tokens": max_tokens,
        "stream": True,
        "logit_bias": NO_EOS,
    }
    request = client.build_request(
        "POST",
        server.base_url + "/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {server.key}"},
    )
    response = client.send(request, stream=True)
    assert response.status_code == 200
    return client, response


def test_full_queue_answers_429_with_retry_after(make_server):
    server = make_server("--slots", "1", "--max-queue", "0", "--ctx", "1024")
    client, busy = _open_stream(server, 900)
    try:
        lines = busy.iter_lines()  # keep the iterator: dropping it closes the stream
        next(lines)
        r = httpx.post(
            server.base_url + "/chat/completions",
            json={"model": MODEL_ID, "messages": prompts(1)[0], "max_tokens": 4},
            headers={"Authorization": f"Bearer {server.key}"},
            timeout=60,
        )
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["type"] == "rate_limit_exceeded"
    finally:
        busy.close()
        client.close()


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Server]:
    """One slot of 2048 tokens, for the clients that leave: each test leaves the slot free."""
    home = tmp_path_factory.mktemp("one-slot")
    set_up(home, "models", "add", str(model_path), "--id", MODEL_ID)
    server = start_server(home, "--model", MODEL_ID, "--slots", "1", "--ctx", "2048")
    yield server
    server.stop()


def generated(server: Server) -> int:
    return server.health()["models"][0]["tokens_generated"]


def slot_freed(server: Server, timeout: float) -> None:
    wait_for(lambda: server.health()["models"][0]["slots_busy"] == 0, timeout, "the slot freed")


def test_disconnect_frees_the_slot_for_the_next_request(one_slot: Server):
    server = one_slot
    before = generated(server)
    abandoned_budget = 1800
    client, stream = _open_stream(server, abandoned_budget)
    lines = stream.iter_lines()
    for _ in range(5):
        next(lines)
    stream.close()
    client.close()
    follow = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0).chat.completions.create(
        model=MODEL_ID, messages=prompts(2)[1], max_tokens=8, temperature=0
    )
    assert follow.choices[0].finish_reason in ("stop", "length")
    # the abandoned stream was stopped: far fewer tokens were generated than it had asked for
    assert generated(server) - before < abandoned_budget // 2
    slot_freed(server, 30)


@pytest.mark.parametrize("route", ["/chat/completions", "/completions"])
def test_a_non_streaming_client_that_leaves_frees_its_slot(one_slot: Server, route):
    server = one_slot
    before = generated(server)
    budget = 1800
    body = {"model": MODEL_ID, "max_tokens": budget, "logit_bias": NO_EOS}
    body |= {"messages": prompts(1)[0]} if route == "/chat/completions" else {"prompt": "Once upon a time"}
    with pytest.raises(httpx.ReadTimeout), httpx.Client(timeout=httpx.Timeout(60, read=1.0)) as http:
        http.post(server.base_url + route, json=body, headers={"Authorization": f"Bearer {server.key}"})
    slot_freed(server, 60)
    # the slot was freed by the disconnect, not by the answer running to its end
    assert 0 < generated(server) - before < budget // 2
    follow = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0).chat.completions.create(
        model=MODEL_ID, messages=prompts(2)[1], max_tokens=8, temperature=0
    )
    assert follow.choices[0].finish_reason in ("stop", "length")


def test_a_new_slot_copies_a_shared_prefix_from_a_busy_one(make_server):
    """Slot 1 has never seen the system prompt; it gets slot 0's KV by copy instead of recomputing it."""
    server = make_server("--slots", "2", "--ctx", "1024")
    client = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
    system = {"role": "system", "content": "You are a careful assistant who answers questions about animals. " * 16}

    def messages(question: str) -> list[dict]:
        return [system, {"role": "user", "content": question}]

    first = client.chat.completions.create(model=MODEL_ID, messages=messages("What do cats eat?"), max_tokens=4)
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    # a long stream sharing the system prompt takes slot 0 (the slot that holds that prefix)
    body = {"model": MODEL_ID, "messages": messages("What do dogs eat?"), "max_tokens": 600, "stream": True}
    with (
        httpx.Client(timeout=60) as http,
        http.stream(
            "POST",
            server.base_url + "/chat/completions",
            json={**body, "logit_bias": NO_EOS},
            headers={"Authorization": f"Bearer {server.key}"},
        ) as busy,
    ):
        lines = busy.iter_lines()
        next(lines)
        third = client.chat.completions.create(model=MODEL_ID, messages=messages("What do birds eat?"), max_tokens=4)
        assert server.health()["models"][0]["slots_busy"] >= 1
    # the whole 64-token blocks of the system prompt (the last of them as far as the first prompt's final block)
    assert third.usage.prompt_tokens_details.cached_tokens >= (first.usage.prompt_tokens // 64 - 1) * 64 > 0
    assert server.health()["models"][0]["prefix_copies"] == 1


@pytest.mark.cpu_numerics
def test_a_stream_moved_to_close_a_gap_keeps_its_answer_and_the_gap_keeps_its_cache(make_server):
    """Slots 0, 1, 2 busy; 1 finishes first. Slot 2's stream moves into slot 1's KV stream (llama.cpp
    decodes consecutive sequence ids in one pass), mid-answer, and the answers stay those of a solo run.
    The finished request's cache is kept elsewhere, so its next turn still starts from it."""
    server = make_server("--slots", "4", "--ctx", "1024")
    a, b, c = prompts(3)
    b = [{"role": "system", "content": "You answer in a few words about everyday things. " * 16}, *b]  # 3 blocks
    lengths = {"a": 64, "b": 24, "c": 64}
    bodies = {
        name: {"messages": m, "max_tokens": lengths[name], "temperature": 0, "logit_bias": NO_EOS}
        for name, m in zip("abc", (a, b, c), strict=True)
    }
    sdk = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=300)
    solo = {
        name: sdk.chat.completions.create(model=MODEL_ID, **body).choices[0].message.content
        for name, body in bodies.items()
    }

    together = stream_in_slot_order(server, bodies)  # slots 0, 1, 2 in that order
    status = server.health()["models"][0]
    assert status["slot_moves"] >= 1  # b's slot is where its solo run left its blocks: one move or two
    assert together == solo
    # b's next turn finds its first turn cached, although its slot now holds c's stream (its whole blocks
    # before its final one; the rest only once refreshed)
    follow = sdk.chat.completions.create(
        model=MODEL_ID,
        messages=[*b, {"role": "assistant", "content": solo["b"]}, {"role": "user", "content": "Why?"}],
        max_tokens=4,
    )
    first_turn = sdk.chat.completions.create(model=MODEL_ID, messages=b, max_tokens=1).usage.prompt_tokens
    assert follow.usage.prompt_tokens_details.cached_tokens >= (first_turn // 64 - 1) * 64 > 0


def test_a_short_prompt_gets_its_first_token_while_a_long_one_beside_it_is_computed(model_path: Path) -> None:
    """Prompts admitted in one step are computed shortest first, and each first token is handed to the event loop
    as it comes: the short request's first token arrives before the long prompt beside it has been computed (which
    takes seconds here). Either rule alone would hold it until the long prompt is done."""

    async def go() -> None:
        options = EngineOptions(ctx=2048, threads=share_of_cores(), gpu_layers=0, slots=2, max_queue=4, batch=512)
        engine = Engine("t", model_path, options)
        await engine.load()
        try:
            text = "Summarize: " + "the mill by the river " * 120
            long = await engine.prompt_tokens([{"role": "user", "content": text}])
            short = await engine.prompt_tokens([{"role": "user", "content": "Hi."}])
            gate = threading.Event()
            held = asyncio.ensure_future(engine._ready()[2].call(gate.wait))  # the engine thread waits: both queue
            gens = [await engine.generate(p, SamplerSpec(temperature=0), max_tokens=2, stops=()) for p in (long, short)]
            gate.set()
            await held
            batches = gens[1].batches()
            first = (await anext(batches))[0]
            evaluated = engine.status()["prompt_tokens_evaluated"]  # as the short answer's first token arrived
            assert first.completion_tokens == 1 and len(long) > 512 and evaluated == len(short)  # nothing of long yet
            assert [first, *[c async for b in batches for c in b]][-1].finish_reason == "length"
            assert [chunk.finish_reason async for chunk in gens[0]][-1] == "length"
            assert engine.status()["prompt_tokens_evaluated"] >= len(long)
        finally:
            await engine.close()

    asyncio.run(asyncio.wait_for(go(), 120))
