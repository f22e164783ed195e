"""Server-sent events as a Litestar response."""

from __future__ import annotations

from typing import Any

from litestar.response import Stream
from litestar.response.base import ASGIResponse

__all__ = ["SSE_HEADERS", "EventStream"]

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStream(Stream):
    """A ``Stream`` whose own media type wins: Litestar's ``Stream`` lets the handler's (JSON) override it."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        kwargs["media_type"] = self.media_type
        return super().to_asgi_response(*args, **kwargs)
