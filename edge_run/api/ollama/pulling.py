"""A pull's progress as Ollama's NDJSON lines, from the :class:`~edge_run.models.changes.PullJob` it follows.

Lines: ``pulling manifest``; per file ``{status: "pulling FILE", digest: FILE, total, completed}`` (about one a
percent); then ``verifying sha256 digest`` (each file was checked as it arrived), ``writing manifest`` and
``success``. A failure after the first line is an ``{"error"}`` line, as Ollama sends it. A client that leaves
before the end cancels the pull, as Ollama does, unless another client follows it too.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING

from edge_run.api.http.errors import ollama_error
from edge_run.api.ollama.schemas import Progress
from edge_run.api.ollama.stream import line
from edge_run.errors import EdgeRunError

if TYPE_CHECKING:
    from edge_run.models.changes import FileProgress, PullJob

__all__ = ["pull_lines"]


def _progress(report: FileProgress) -> Progress:
    return Progress(status=f"pulling {report.file}", digest=report.file, total=report.total, completed=report.completed)


async def pull_lines(
    job: PullJob, first: FileProgress | None, reports: AsyncGenerator[FileProgress, None], cancel: Callable[[], object]
) -> AsyncIterator[bytes]:
    """The NDJSON lines of ``job``; ``cancel`` is called if the client leaves first and no one else follows."""
    assert job.task is not None
    try:
        yield line(Progress(status="pulling manifest"))
        if first is not None:
            yield line(_progress(first))
        async for report in reports:
            yield line(_progress(report))
        try:
            job.task.result()
        except EdgeRunError as exc:
            yield line(ollama_error(exc))
            return
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            yield line(Progress(status=status))
    finally:
        await reports.aclose()  # this client no longer follows
        if not job.task.done() and not job.cancelled and job.followers == 0:
            cancel()
