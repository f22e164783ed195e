"""A failure inside the engine thread fails only the requests in flight, with a generic message (the
cause goes to the log), and the engine keeps serving: also when failing those requests fails too."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_run.engine import Engine, EngineOptions, SamplerSpec
from edge_run.engine.llama import context as llama_context
from edge_run.engine.llama import model as llama_model
from edge_run.engine.threads import ThreadGovernor
from edge_run.errors import EngineFailure
from tests.support import share_of_cores

pytestmark = pytest.mark.integration


async def answer(engine: Engine, text: str) -> str:
    prompt = await engine.prompt_tokens([{"role": "user", "content": text}])
    gen = await engine.generate(prompt, SamplerSpec(temperature=0), max_tokens=8, stops=())
    return "".join([chunk.text async for chunk in gen])


@pytest.mark.parametrize("also_when_clearing", [False, True], ids=["decode fails", "clearing fails too"])
def test_a_failed_step_fails_its_requests_and_the_engine_serves_on(
    model_path: Path, monkeypatch: pytest.MonkeyPatch, also_when_clearing: bool
):
    real_decode, real_seq_rm = llama_context.Context.decode, llama_context.Context.seq_rm
    broken = {"on": False}

    def decode(self: llama_context.Context, batch: llama_context.Batch, **call):
        if broken["on"]:
            raise EngineFailure("llama_decode returned -3")  # what Context.decode raises
        return real_decode(self, batch, **call)

    def seq_rm(self: llama_context.Context, seq: int, p0: int, p1: int = -1) -> None:
        if broken["on"] and also_when_clearing:
            raise RuntimeError("cannot clear")
        real_seq_rm(self, seq, p0, p1)

    monkeypatch.setattr(llama_context.Context, "decode", decode)
    monkeypatch.setattr(llama_context.Context, "seq_rm", seq_rm)

    async def go() -> None:
        options = EngineOptions(ctx=512, threads=share_of_cores(), gpu_layers=0, slots=2, max_queue=4, batch=64)
        engine = Engine("t", model_path, options)
        await engine.load()
        try:
            before = await answer(engine, "Say hi.")
            broken["on"] = True
            both = asyncio.gather(
                answer(engine, "Tell me about cats."), answer(engine, "Tell me about dogs."), return_exceptions=True
            )
            results = await asyncio.wait_for(both, 60)  # a request lost by the engine would hang
            for result in results:
                assert isinstance(result, EngineFailure)
                assert "llama_decode" not in result.message
            broken["on"] = False
            assert await asyncio.wait_for(answer(engine, "Say hi."), 60) == before
            assert engine.status()["slots_busy"] == 0
        finally:
            await engine.close()

    asyncio.run(go())


def test_a_failed_step_leaves_the_waiting_requests_to_run(model_path: Path, monkeypatch: pytest.MonkeyPatch):
    real_decode = llama_context.Context.decode
    fail_next = {"n": 0}

    def decode(self: llama_context.Context, batch: llama_context.Batch, **call):
        if fail_next["n"]:
            fail_next["n"] -= 1
            raise EngineFailure("llama_decode returned -3")
        return real_decode(self, batch, **call)

    monkeypatch.setattr(llama_context.Context, "decode", decode)

    async def go() -> None:
        options = EngineOptions(ctx=512, threads=share_of_cores(), gpu_layers=0, slots=1, max_queue=4, batch=64)
        engine = Engine("t", model_path, options)
        await engine.load()
        try:
            expected = await answer(engine, "Say hi.")
            prompt = await engine.prompt_tokens([{"role": "user", "content": "Tell me about cats."}])
            first = await engine.generate(prompt, SamplerSpec(temperature=0), max_tokens=400, stops=())
            chunks = first.__aiter__()
            await chunks.__anext__()  # the first has the only slot and is generating
            second = asyncio.ensure_future(answer(engine, "Say hi."))
            deadline = asyncio.get_running_loop().time() + 10
            while not engine.status()["queued"] and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.001)  # the second waits for the slot (within milliseconds)
            fail_next["n"] = 1  # the next step fails: the first's

            async def rest() -> None:
                async for _ in chunks:
                    pass

            with pytest.raises(EngineFailure):
                await asyncio.wait_for(rest(), 60)
            assert await asyncio.wait_for(second, 60) == expected  # it ran afterwards, as if nothing happened
        finally:
            await engine.close()

    asyncio.run(go())


def extra_buffer_types_seen(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each model load's ``use_extra_bufts`` from now on, in order (the loads go on as before)."""
    seen: list[bool] = []
    real_load = llama_model.L.llama_model_load_from_file

    def load(path: bytes, params: object) -> object:
        seen.append(bool(params.use_extra_bufts))  # type: ignore[attr-defined]
        return real_load(path, params)

    monkeypatch.setattr(llama_model.L, "llama_model_load_from_file", load)
    return seen


def test_models_load_without_llama_cpp_s_extra_cpu_buffer_types(model_path: Path, monkeypatch: pytest.MonkeyPatch):
    """edge-run's own choice (README, "The same request gives the same answer"): a chat model's weights are never
    repacked or put in AMX buffers. Repacking changes a token's logits with its neighbours, and on Intel CPUs with
    AMX the vendored llama.cpp's extra buffer types crash ``llama_decode`` on any prompt of two or more tokens."""
    seen = extra_buffer_types_seen(monkeypatch)

    async def go() -> tuple[int, str]:
        options = EngineOptions(ctx=512, threads=1, gpu_layers=0, slots=1, max_queue=1, batch=64)
        engine = Engine("t", model_path, options)
        await engine.load()
        try:
            prompt = await engine.prompt_tokens([{"role": "user", "content": "Name three colours."}])
            return len(prompt), await answer(engine, "Name three colours.")
        finally:
            await engine.close()

    n_prompt, text = asyncio.run(go())
    assert seen == [False]
    assert n_prompt > 2 and text.strip()


@pytest.mark.parametrize("amx", [False, True], ids=["no AMX", "AMX built in"])
def test_an_embedder_repacks_its_weights_but_never_into_amx_buffers(
    retrieval_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, amx: bool
):
    """A model that never generates takes llama.cpp's extra CPU buffer types (repacked weights), unless they
    include AMX's: on an Intel Xeon with AMX, its kernels crashed the first ``llama_decode`` of two tokens or more,
    so the embedding tests' server died. Only the load is checked here: decoding from AMX buffers would crash
    this test on such a CPU (``test_retrieval.py`` embeds with the real setting)."""
    seen = extra_buffer_types_seen(monkeypatch)
    monkeypatch.setattr(llama_model, "amx_built", lambda: amx)

    async def go() -> None:
        options = EngineOptions(
            kind="embedding", ctx=512, threads=share_of_cores(), gpu_layers=0, slots=1, max_queue=4, batch=512
        )
        engine = Engine("e", retrieval_models["embed-last"], options)
        await engine.load()
        await engine.close()

    asyncio.run(go())
    assert seen == [not amx]


@pytest.fixture
def second_block(model_path: Path) -> Iterator[tuple[llama_context.Context, llama_context.Batch]]:
    """A context holding a text's first 64 rows, and a batch of its next 64 (the last one's logits asked)."""
    model = llama_model.Model(model_path, gpu_layers=0)
    ctx = llama_context.Context(model, n_seq=1, n_ctx_seq=512, n_batch=512, threads=share_of_cores())
    batch = llama_context.Batch(512)
    tokens = model.tokenize("The river runs past the old mill and under the stone bridge. " * 12)[:130]
    try:
        batch.fill(tokens[:64], 0, 0, last_logits=False)
        assert ctx.decode(batch)
        batch.fill(tokens[64:128], 64, 0, last_logits=True)
        yield ctx, batch
    finally:
        batch.close()
        ctx.close()
        model.close()


def test_a_call_that_its_abort_stops_keeps_none_of_its_rows(second_block, caplog: pytest.LogCaptureFixture) -> None:
    """``Context.decode``'s ``abort`` (the idle refresh's call, when a request comes): llama.cpp stops after the graph
    node it asks at, drops the rows the call wrote, and the same rows computed again give the logits they would have
    given. Its stop is not logged as an error."""
    ctx, batch = second_block
    asked = []
    with caplog.at_level(logging.ERROR):
        assert not ctx.decode(batch, abort=lambda: not asked.append(1))  # stop at once
    assert not caplog.records
    assert len(asked) == 1 and llama_context.L.llama_memory_seq_pos_max(ctx._mem, 0) == 63
    assert ctx.decode(batch, abort=lambda: False)
    stopped_first = ctx.logits(63).copy()
    ctx.seq_rm(0, 64, -1)
    assert ctx.decode(batch)
    assert (stopped_first == ctx.logits(63)).all()


def test_a_call_past_its_deadline_stops_keeps_none_of_its_rows_and_the_next_call_runs(second_block) -> None:
    """``Context.decode``'s ``deadline`` (a step that collapsed beside a busy process, ``threads.Steps``): the flag that
    llama.cpp's abort callback reads goes up past it, the call stops and drops its rows, and the flag is down again
    for the next call, which computes the rows as a call never stopped does."""
    ctx, batch = second_block
    assert not ctx.decode(batch, deadline=1e-6)  # 64 rows take milliseconds
    assert llama_context.L.llama_memory_seq_pos_max(ctx._mem, 0) == 63
    assert ctx.decode(batch, deadline=60.0)
    in_time = ctx.logits(63).copy()
    ctx.seq_rm(0, 64, -1)
    assert ctx.decode(batch)
    assert (in_time == ctx.logits(63)).all()
    ctx.seq_rm(0, 64, -1)
    assert ctx.decode(batch, abort=lambda: False)  # the refresh's own callback reads the flag too: it is down


@pytest.mark.all_cores
def test_steps_stopped_at_their_deadline_and_done_again_on_one_thread_give_the_same_answer(
    model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every step on two threads stopped at once, as on a machine that just got busy (``threads.Steps``), and done
    again on one (the prompt's and the first tokens', then the governor's tries): the answer and its
    log-probabilities, to the bit, are a one-thread engine's."""
    text = "Tell me about the river, the old mill and the stone bridge. " * 8

    async def run(threads: int) -> tuple[list, int]:
        options = EngineOptions(ctx=1024, threads=threads, gpu_layers=0, slots=1, max_queue=1, batch=512)
        engine = Engine("t", model_path, options)
        await engine.load()
        try:
            prompt = await engine.prompt_tokens([{"role": "user", "content": text}])
            gen = await engine.generate(prompt, SamplerSpec(temperature=0), max_tokens=40, stops=(), top_logprobs=2)
            chunks = [(c.text, c.logprobs) async for c in gen]
            return chunks, engine.status()["steps_late"]
        finally:
            await engine.close()

    quiet, _ = asyncio.run(run(1))
    monkeypatch.setattr(ThreadGovernor, "deadline", lambda self, threads, rows: 1e-6 if threads > 1 else None)
    stopped, late = asyncio.run(run(2))
    assert late >= 3  # each step on two threads: until the governor gives the second thread up, then its tries
    assert stopped == quiet
