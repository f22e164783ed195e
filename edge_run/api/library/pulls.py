"""``POST /v1/library/pulls`` starts a pull (or joins the one under way) and streams its progress as server-sent
events; ``DELETE /v1/library/pulls/{model}`` cancels it; ``GET /v1/library/pulls`` lists the pulls under way.

A client that leaves the stream does not cancel the pull: the page may reload, and follow it again by posting the
same model. Only the ``DELETE`` cancels. A name that resolves to nothing, or a pull that fails before its first
byte, is an error before the stream starts (a 4xx); after that, the stream ends with ``success``, ``error`` or
``cancelled``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING

from litestar import delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody

from edge_run.api.http.sse import SSE_HEADERS, EventStream, sse
from edge_run.api.library.schemas import PullEvent, PullList, PullStart, PullState
from edge_run.errors import EdgeRunError, InvalidRequest, PullCancelled
from edge_run.models.changes import ModelChanges

if TYPE_CHECKING:
    from edge_run.models.changes import FileProgress, PullJob

__all__ = ["cancel_pull", "list_pulls", "start_pull", "store_of"]


def store_of(changes: ModelChanges | None) -> ModelChanges:
    """The server's :class:`ModelChanges`; a 400 when it runs without a model store."""
    if changes is None:
        raise InvalidRequest("this server was started without a model store: pulls and deletes are off")
    return changes


def _downloading(report: FileProgress) -> PullEvent:
    return PullEvent(status="downloading", file=report.file, completed=report.completed, total=report.total)


async def _events(
    job: PullJob, first: FileProgress | None, reports: AsyncGenerator[FileProgress, None]
) -> AsyncIterator[bytes]:
    assert job.task is not None
    try:
        if first is not None:
            yield sse(_downloading(first))
        async for report in reports:
            yield sse(_downloading(report))
    finally:
        await reports.aclose()  # a client that left stops following; the pull goes on
    try:
        spec = job.task.result()
    except PullCancelled:
        yield sse(PullEvent(status="cancelled"))
    except EdgeRunError as exc:
        yield sse(PullEvent(status="error", error=exc.message))
    else:
        yield sse(PullEvent(status="success", model=spec.id))


@post(
    "/library/pulls",
    status_code=200,
    summary="Pull a model (or follow its pull under way): server-sent progress events, then success, error or "
    "cancelled",
)
async def start_pull(data: JSONBody[PullStart], changes: NamedDependency[ModelChanges | None]) -> PullEvent:
    job = store_of(changes).pull(data.model)
    first, reports = await job.first()
    # a stream is a Response that Litestar sends as it is: the schema documents one event
    return EventStream(_events(job, first, reports), media_type="text/event-stream", headers=SSE_HEADERS)  # type: ignore[return-value]


@get("/library/pulls", summary="The pulls under way, with each file's progress")
async def list_pulls(changes: NamedDependency[ModelChanges | None]) -> PullList:
    jobs = changes.under_way() if changes is not None else []
    return PullList(data=[PullState(model=j.target, files=[_downloading(f) for f in j.latest]) for j in jobs])


@delete("/library/pulls/{model:path}", status_code=200, summary="Cancel a pull under way; nothing it wrote is kept")
async def cancel_pull(model: FromPath[str], changes: NamedDependency[ModelChanges | None]) -> PullEvent:
    job = store_of(changes).cancel(model.lstrip("/"))
    return PullEvent(status="cancelled", model=job.target)
