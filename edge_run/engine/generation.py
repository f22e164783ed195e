"""A request's token streams as the event loop reads them (:meth:`Engine.generate` makes one)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from edge_run.engine.engine import Engine
    from edge_run.engine.slots import Job
    from edge_run.engine.types import Chunk

__all__ = ["Generation"]


class Generation:
    """A request's token streams, one per choice. Iterate for :class:`Chunk`; ``cancel()`` frees the slots."""

    def __init__(self, engine: Engine, jobs: list[Job], queue: asyncio.Queue[Chunk]) -> None:
        self._queue = queue
        self._engine = engine
        self.jobs = jobs
        self.done = False

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        async for ready in self.batches():
            for chunk in ready:
                yield chunk

    async def batches(self) -> AsyncIterator[list[Chunk]]:
        """Every chunk that is ready, in order: a consumer that fell behind catches up in one write."""
        remaining = len(self.jobs)
        try:
            while remaining:
                ready: list[Chunk] = []
                chunk = await self._queue.get()
                while True:
                    if chunk.error is not None:
                        if ready:
                            yield ready
                        raise chunk.error
                    ready.append(chunk)
                    remaining -= chunk.finish_reason is not None
                    if not remaining or self._queue.empty():
                        break
                    chunk = self._queue.get_nowait()
                yield ready
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Stop generating (client gone); idempotent, safe after the end."""
        if not self.done:
            self.done = True
            for job in self.jobs:
                job.cancelled = True
            self._engine._finished()
