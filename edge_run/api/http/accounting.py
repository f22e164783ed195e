"""Each request, measured: a :class:`~edge_run.serving.metering.Meter` per request, its end, and draining.

The :func:`accounting` middleware gives every request a meter in the ASGI scope. The auth guard puts
the request's key on it; a request that runs a model gets the :class:`~edge_run.keys.limits.Lease` its
key's limits granted (see :mod:`edge_run.api.deps`), and its tokens are counted as they flow. When the
response is over (sent in full, failed, or cut off by a client that left) the middleware ends the meter:
the lease frees its place and records usage, the request counters move, and the access log gets its
line. The middleware also sends the ``x-ratelimit-*`` headers, and answers ``503`` to new requests once
the server is draining (``app.state.draining``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edge_run.api.http.access_log import AccessLine
from edge_run.api.http.errors import refusal
from edge_run.errors import ServerDraining
from edge_run.serving.metering import Meter

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from edge_run.api.http.access_log import AccessLog
    from edge_run.api.http.metrics import Metrics
    from edge_run.keys.store import KeyRecord

__all__ = ["accounting", "key_of", "meter_of"]

METER = "edge_run_meter"  # the request's Meter, in scope["state"]
QUIET = ("/health", "/static/", "/favicon")  # not in the access log: the page polls /health


def meter_of(connection: ASGIConnection) -> Meter | None:
    return connection.scope.get("state", {}).get(METER)


def key_of(connection: ASGIConnection) -> KeyRecord | None:
    """The request's key; None when auth is off."""
    meter = meter_of(connection)
    return meter.key if meter is not None else None


def _finish(meter: Meter, status: int, metrics: Metrics | None, log: AccessLog | None) -> None:
    """The response is over; count and log it once."""
    if meter.done:
        return
    meter.done = True
    if meter.lease is not None:
        meter.lease.finish(
            status,
            model=meter.model or "",
            prompt_tokens=meter.prompt_tokens,
            completion_tokens=meter.completion_tokens,
            cached_tokens=meter.cached_tokens,
            reasoning_tokens=meter.reasoning_tokens,
        )
    if metrics is not None and meter.model is not None:
        metrics.requests.labels(meter.model, meter.path, str(status)).inc()
        if meter.reasoning_tokens:
            metrics.reasoning_tokens.labels(meter.model).inc(meter.reasoning_tokens)
    if log is not None and not meter.path.startswith(QUIET):
        log.write(_line(meter, status))


def _line(meter: Meter, status: int) -> AccessLine:
    ran = meter.model is not None
    return AccessLine(
        time=datetime.fromtimestamp(meter.wall, UTC).isoformat(timespec="milliseconds"),
        method=meter.method,
        path=meter.path,
        status=status,
        duration_ms=round((time.monotonic() - meter.started) * 1000, 1),
        key=meter.key.name if meter.key is not None else None,
        model=meter.model,
        prompt_tokens=meter.prompt_tokens if ran else None,
        completion_tokens=meter.completion_tokens if ran else None,
        cached_tokens=meter.cached_tokens if ran else None,
        ttft_ms=round((meter.first_token - meter.started) * 1000, 1) if meter.first_token else None,
    )


def accounting(metrics: Metrics | None, log: AccessLog | None) -> Callable[[ASGIApp], ASGIApp]:
    """ASGI middleware: a meter per request, the ``x-ratelimit-*`` headers, the meter's end, and draining."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def metered(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            meter = Meter(scope["method"], scope["path"], metrics=metrics)  # type: ignore[typeddict-item]
            scope.setdefault("state", {})[METER] = meter  # type: ignore[typeddict-item]
            if scope["app"].state.get("draining") and not scope["path"].startswith("/health"):  # type: ignore[typeddict-item]
                await _refuse_draining(send)
                _finish(meter, 503, metrics, log)
                return
            status = 500

            async def send_with_headers(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    if meter.headers:
                        encoded = [(k.encode(), v.encode()) for k, v in meter.headers.items()]
                        message = {**message, "headers": [*message.get("headers", []), *encoded]}  # type: ignore[typeddict-item]
                await send(message)

            try:
                await app(scope, receive, send_with_headers)
            finally:
                _finish(meter, status, metrics, log)

        return metered

    return middleware


async def _refuse_draining(send: Send) -> None:
    body, headers = refusal(ServerDraining("The server is shutting down; retry shortly."))
    start: Any = {"type": "http.response.start", "status": 503, "headers": [*headers, (b"connection", b"close")]}
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})
