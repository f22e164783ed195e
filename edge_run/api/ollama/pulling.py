"""A pull's progress as Ollama's NDJSON lines: the download thread reports to :class:`PullEvents` (a progress
:class:`~edge_run.models.progress.Board`), which hands each report to the event loop.

Lines: ``pulling manifest``; per file ``{status: "pulling FILE", digest: FILE, total, completed}`` (about one a
percent); then ``verifying sha256 digest`` (each file was checked as it arrived), ``writing manifest`` and
``success``. A failure after the first line is an ``{"error"}`` line, as Ollama sends it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from edge_run.api.http.errors import ollama_error
from edge_run.api.ollama.schemas import Progress
from edge_run.api.ollama.stream import line
from edge_run.errors import EdgeRunError, InvalidRequest
from edge_run.models.fetch import FetchError
from edge_run.models.pull import PullError

if TYPE_CHECKING:
    from edge_run.models.progress import Board

__all__ = ["PullEvents", "pull_errors"]

T = TypeVar("T")


def pull_errors(pull: Callable[[str, Board], T], name: str, board: Board) -> T:
    """``pull(name, board)``, its failures (a name that resolves to nothing, a download that fails) as a 400."""
    try:
        return pull(name, board)
    except (PullError, FetchError, ValueError) as exc:
        raise InvalidRequest(f"pull `{name}`: {exc}", param="model") from None


class _File:
    def __init__(self, name: str, total: float | None, completed: float) -> None:
        self.name, self.total, self.completed, self.sent = name, total, completed, completed


class PullEvents:
    """The download's reports, from its thread, as lines for the event loop's stream."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Progress] = asyncio.Queue()
        self._files: list[_File] = []
        self._held: Progress | None = None  # the first report, taken by :meth:`first`

    # the Board, called on the download's thread

    def add_task(self, description: str, *, total: float | None = None, completed: int = 0) -> Any:
        self._files.append(_File(description, total, completed))
        self._post(self._files[-1])
        return len(self._files) - 1

    def advance(self, task_id: Any, advance: float = 1) -> None:
        f = self._files[task_id]
        f.completed += advance
        if f.completed - f.sent >= (f.total or 0) / 100 or (f.total is not None and f.completed >= f.total):
            f.sent = f.completed
            self._post(f)

    def _post(self, f: _File) -> None:
        total = int(f.total) if f.total is not None else None
        event = Progress(status=f"pulling {f.name}", digest=f.name, total=total, completed=int(f.completed))
        self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    # the event loop's side

    async def _next(self, task: asyncio.Future[Any]) -> Progress | None:
        """The next report, or None once the download is over and every report was taken."""
        while self._queue.empty() and not task.done():
            getter = asyncio.ensure_future(self._queue.get())
            await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                return getter.result()
            getter.cancel()
        return None if self._queue.empty() else self._queue.get_nowait()

    async def first(self, task: asyncio.Future[Any]) -> None:
        """Wait for the first report or the end; a download that failed before reporting raises here."""
        self._held = await self._next(task)
        failure = task.exception() if self._held is None else None
        if failure is not None:
            raise failure

    async def lines(self, task: asyncio.Future[Any]) -> AsyncIterator[bytes]:
        yield line(Progress(status="pulling manifest"))
        if self._held is not None:
            yield line(self._held)
        while (event := await self._next(task)) is not None:
            yield line(event)
        try:
            task.result()
        except EdgeRunError as exc:
            yield line(ollama_error(exc))
            return
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            yield line(Progress(status=status))
