"""Answers as server-sent events, or whole: the one stream skeleton every wire format fills in.

Each wire format says how its stream begins, how a batch of pieces becomes frames, how it ends and how a
failure is told in-band (:class:`Frames`); :func:`answer` streams that, or waits for the whole answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import msgspec
from litestar.response import Stream
from litestar.response.base import ASGIResponse

from edge_run.api.http.accounting import meter_of
from edge_run.errors import ClientDisconnected, EdgeRunError

if TYPE_CHECKING:
    from litestar import Request

    from edge_run.serving.assembly import Piece, Run

__all__ = ["SSE_HEADERS", "EventStream", "Frames", "answer", "sse", "unless_disconnected"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

T = TypeVar("T")

_encode = msgspec.json.Encoder().encode


def sse(body: object, event: str | None = None) -> bytes:
    """One server-sent event frame holding ``body`` as JSON, under an ``event:`` name if given."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + _encode(body) + b"\n\n"


class EventStream(Stream):
    """A ``Stream`` whose own media type wins: Litestar's ``Stream`` lets the handler's (JSON) override it."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        kwargs["media_type"] = self.media_type
        return super().to_asgi_response(*args, **kwargs)


class Frames(Protocol):
    """A wire format's events for one answer."""

    def head(self) -> bytes:
        """What goes out before the first token."""

    def pieces(self, ready: list[Piece]) -> bytes:
        """The frames of one batch of pieces (empty: nothing to send)."""

    def tail(self) -> bytes:
        """The end of a complete answer."""

    def failed(self, exc: EdgeRunError) -> bytes:
        """A failure after the headers went out, told in-band."""


def _charge(request: Request, run: Run) -> None:
    """Tell the request's meter what only the assembled answer knows: its thoughts' tokens."""
    meter = meter_of(request)
    if meter is not None:
        meter.reasoning_tokens = run.totals.reasoning_tokens


async def _events(request: Request, run: Run, frames: Frames) -> AsyncIterator[bytes]:
    """Whatever is ready goes out in one write. A client that leaves (the next write fails) frees the slots."""
    try:
        if head := frames.head():
            yield head
        try:
            async for ready in run.pieces():
                if out := frames.pieces(ready):
                    yield out
        except EdgeRunError as exc:  # the headers are gone: report in-band
            _charge(request, run)
            yield frames.failed(exc)
            return
        _charge(request, run)
        yield frames.tail()
    finally:
        run.cancel()


async def _disconnect(request: Request) -> None:
    # the body is already read: the next ASGI message is http.disconnect when the client leaves
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await a whole (non-streaming) answer; if the client leaves first, cancel it so its slots free up
    (``ClientDisconnected``).

    Streams need no watch: their next write fails and closes the generation.
    """
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled():
        raise ClientDisconnected("The client disconnected before the answer was ready.")
    return task.result()


async def answer(
    request: Request,
    run: Run,
    streaming: bool,
    frames: Callable[[], Frames],
    whole: Callable[[], Awaitable[T]],
    media_type: str = "text/event-stream",
) -> T | EventStream:
    """Stream the answer's events (server-sent events, or another ``media_type``: Ollama's NDJSON), or wait for
    all of it (cancelled if the client leaves first)."""
    if streaming:
        return EventStream(_events(request, run, frames()), media_type=media_type, headers=SSE_HEADERS)
    try:
        return await unless_disconnected(request, whole())
    finally:
        _charge(request, run)
