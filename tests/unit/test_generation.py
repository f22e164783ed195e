"""A request's token stream as the HTTP layer reads it: catching up in one batch, errors in order."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from edge_run.engine import Chunk, Generation
from edge_run.errors import EngineFailure
from tests.fakes import FinishCounter


def _generation(chunks: list[Chunk], n_jobs: int = 1) -> tuple[Generation, FinishCounter]:
    queue: asyncio.Queue[Chunk] = asyncio.Queue()
    for chunk in chunks:
        queue.put_nowait(chunk)
    engine = FinishCounter()
    jobs = [SimpleNamespace(cancelled=False) for _ in range(n_jobs)]
    return Generation(engine, jobs, queue), engine  # type: ignore[arg-type]


async def _collect(gen: Generation) -> list[list[Chunk]]:
    return [ready async for ready in gen.batches()]


def test_a_consumer_that_fell_behind_gets_every_ready_chunk_at_once():
    chunks = [Chunk(text="a"), Chunk(text="b"), Chunk(text="c", finish_reason="stop")]
    gen, engine = _generation(chunks)
    assert asyncio.run(_collect(gen)) == [chunks]
    assert engine.finished == 1


def test_batches_wait_until_every_choice_has_finished():
    async def go() -> list[list[Chunk]]:
        gen, _ = _generation([Chunk(index=0, text="x", finish_reason="length")], n_jobs=2)
        later = Chunk(index=1, text="y", finish_reason="stop")
        asyncio.get_running_loop().call_later(0.01, gen._queue.put_nowait, later)
        return await _collect(gen)

    batches = asyncio.run(go())
    assert [[c.text for c in b] for b in batches] == [["x"], ["y"]]


def test_chunks_before_an_error_are_delivered_then_the_error_is_raised():
    chunks = [Chunk(text="a"), Chunk(finish_reason="error", error=EngineFailure("boom")), Chunk(text="never")]
    gen, engine = _generation(chunks)

    async def go() -> list[list[Chunk]]:
        seen = []
        with pytest.raises(EngineFailure):
            async for ready in gen.batches():
                seen.append(ready)
        return seen

    assert asyncio.run(go()) == [chunks[:1]]
    assert all(job.cancelled for job in gen.jobs)
    assert engine.finished == 1
