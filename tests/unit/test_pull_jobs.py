"""Pull jobs (edge_run/models/changes.py): one download however many ask, cancelled from its progress report,
and the model offered once pulled; with a stand-in for the model files whose download the test steps through."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from edge_run.errors import InvalidRequest, ModelNotFound, NotInLibrary, PullCancelled
from edge_run.models.changes import ModelChanges
from edge_run.models.registry import ModelSpec
from tests.fakes import fake_registry

NAME = "hf:acme/tiny-GGUF"


class SteppedFiles:
    """``ModelFiles.pull`` as a download of ``chunks`` chunks, each sent only when the test lets it (``step``)."""

    def __init__(self, chunks: int = 3) -> None:
        self.chunks = chunks
        self.pulls = 0
        self.go = threading.Semaphore(0)

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.go.release()

    def pull(self, name: str, board: Any) -> ModelSpec:
        self.pulls += 1
        task = board.add_task("tiny.gguf", total=self.chunks * 100)
        for _ in range(self.chunks):
            self.go.acquire(timeout=30)
            board.advance(task, 100)
        return ModelSpec("acme/tiny-GGUF", Path("tiny.gguf"), "hf")


async def _collect(changes: ModelChanges, name: str) -> tuple[list[int], Any]:
    job = changes.pull(name)
    first, reports = await job.first()
    seen = [first.completed] if first else []
    seen += [r.completed async for r in reports]
    return seen, job.task.exception() if job.task.done() and not job.task.cancelled() else None


def test_two_requests_share_one_download_and_the_model_is_offered() -> None:
    async def go() -> None:
        files = SteppedFiles()
        registry = fake_registry()
        changes = ModelChanges(files, registry)  # type: ignore[arg-type]
        one = asyncio.create_task(_collect(changes, NAME))
        await asyncio.sleep(0.05)
        two = asyncio.create_task(_collect(changes, NAME))
        await asyncio.sleep(0.05)
        files.step(3)
        (a, err_a), (b, err_b) = await one, await two
        assert files.pulls == 1 and err_a is None and err_b is None
        assert a[-1] == b[-1] == 300 and a[0] == 0
        assert registry.entry("acme/tiny-GGUF").spec.source == "hf"
        assert changes.under_way() == []

    asyncio.run(go())


def test_a_cancel_raises_from_the_next_progress_report_and_offers_nothing() -> None:
    async def go() -> None:
        files = SteppedFiles()
        registry = fake_registry()
        changes = ModelChanges(files, registry)  # type: ignore[arg-type]
        job = changes.pull(NAME)
        first, reports = await job.first()
        assert first is not None and first.completed == 0
        files.step()
        assert (await anext(reports)).completed == 100
        changes.cancel(NAME)
        with pytest.raises(ModelNotFound, match="no pull"):
            changes.cancel(NAME)  # no longer under way
        files.step()
        assert [r async for r in reports] == []
        assert isinstance(job.task.exception(), PullCancelled)
        with pytest.raises(ModelNotFound):
            registry.entry("acme/tiny-GGUF")

    asyncio.run(go())


def test_names_that_resolve_to_nothing_are_refused_before_any_download() -> None:
    async def go() -> None:
        files = SteppedFiles()
        changes = ModelChanges(files, fake_registry())  # type: ignore[arg-type]
        with pytest.raises(NotInLibrary):
            changes.pull("no-such-model:7b")
        with pytest.raises(InvalidRequest):
            changes.pull("hf:not a repo")
        assert files.pulls == 0 and changes.under_way() == []

    asyncio.run(go())
