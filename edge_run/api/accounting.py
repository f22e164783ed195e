"""Each request, measured: its key's scope and limits, its tokens as they flow, its metrics and its log line.

The :func:`accounting` middleware gives every request a :class:`Meter` in the ASGI scope. The guard
puts the request's key on it and, for a request that runs a model, the :class:`Lease` its key's
limits granted. Routes take their model through :func:`use_model`, which refuses models outside the
key's patterns and hands out the engine metered: every prompt and every generated token is counted at
once (on the lease, in the metrics). When the response is over (sent in full, failed, or cut off by a
client that left) the middleware ends the meter: the lease frees its place and records usage, the
request counters move, and the access log gets its line. The middleware also sends the
``x-ratelimit-*`` headers, and answers ``503`` to new requests once the server is draining.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edge_run.api.access_log import AccessLine
from edge_run.errors import ModelNotFound
from edge_run.upstream.pool import UpstreamPool

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from edge_run.api.access_log import AccessLog
    from edge_run.api.metrics import Metrics
    from edge_run.engine import Chunk
    from edge_run.keys.limits import Lease
    from edge_run.keys.store import KeyRecord

__all__ = ["METER", "Meter", "accounting", "key_of", "meter_of", "use_model"]

METER = "edge_run_meter"  # the request's Meter, in scope["state"]
QUIET = ("/health", "/static/", "/favicon")  # not in the access log: the page polls /health


@dataclass(eq=False)
class Meter:
    """One request's figures."""

    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    wall: float = field(default_factory=time.time)
    key: KeyRecord | None = None
    lease: Lease | None = None
    metrics: Metrics | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    first_token: float | None = None
    last_token: float | None = None
    headers: dict[str, str] = field(default_factory=dict)  # x-ratelimit-*
    done: bool = False

    def prompt(self, tokens: int, cached: int = 0) -> None:
        self.prompt_tokens += tokens
        self.cached_tokens += cached
        if self.lease is not None:
            self.lease.spend(tokens)
        if self.metrics is not None and self.model is not None:
            self.metrics.prompt_tokens.labels(self.model).inc(tokens)
            self.metrics.cached_tokens.labels(self.model).inc(cached)

    def completion(self, tokens: int) -> None:
        if tokens <= 0:
            return
        now = time.monotonic()
        self.completion_tokens += tokens
        if self.lease is not None:
            self.lease.spend(tokens)
        if self.metrics is not None and self.model is not None:
            self.metrics.tokens_predicted.labels(self.model).inc(tokens)
            if self.first_token is None:
                self.metrics.ttft.labels(self.model).observe(now - self.started)
            elif self.last_token is not None:
                self.metrics.token_gap.labels(self.model).observe((now - self.last_token) / tokens)
        self.first_token = self.first_token or now
        self.last_token = now

    def finish(self, status: int, log: AccessLog | None) -> None:
        """The response is over; count and log it once."""
        if self.done:
            return
        self.done = True
        if self.lease is not None:
            self.lease.finish(
                status,
                model=self.model or "",
                prompt_tokens=self.prompt_tokens,
                completion_tokens=self.completion_tokens,
                cached_tokens=self.cached_tokens,
            )
        if self.metrics is not None and self.model is not None:
            self.metrics.requests.labels(self.model, self.path, str(status)).inc()
        if log is not None and not self.path.startswith(QUIET):
            ran = self.model is not None
            log.write(
                AccessLine(
                    time=datetime.fromtimestamp(self.wall, UTC).isoformat(timespec="milliseconds"),
                    method=self.method,
                    path=self.path,
                    status=status,
                    duration_ms=round((time.monotonic() - self.started) * 1000, 1),
                    key=self.key.name if self.key is not None else None,
                    model=self.model,
                    prompt_tokens=self.prompt_tokens if ran else None,
                    completion_tokens=self.completion_tokens if ran else None,
                    cached_tokens=self.cached_tokens if ran else None,
                    ttft_ms=round((self.first_token - self.started) * 1000, 1) if self.first_token else None,
                )
            )


def meter_of(connection: ASGIConnection) -> Meter | None:
    return connection.scope.get("state", {}).get(METER)


def key_of(connection: ASGIConnection) -> KeyRecord | None:
    """The request's key; None when auth is off."""
    meter = meter_of(connection)
    return meter.key if meter is not None else None


@contextlib.asynccontextmanager
async def use_model(connection: ASGIConnection, model: str, keep_alive: float | None) -> AsyncIterator[Any]:
    """The model's engine for one request (see :meth:`ModelRegistry.use`), within the key's scope, metered."""
    key = key_of(connection)
    if key is not None and not key.allows(model):
        raise ModelNotFound(model)  # the same answer as for a model that does not exist
    async with connection.app.state.registry.use(model, keep_alive) as engine:
        meter = meter_of(connection)
        if meter is not None:
            meter.model = model
        # an upstream pool is handed out as it is: its proxy charges the meter from the upstream's usage
        yield engine if meter is None or isinstance(engine, UpstreamPool) else MeteredEngine(engine, meter)


class MeteredEngine:
    """An engine whose generations and embeddings count their tokens on a meter."""

    def __init__(self, engine: Any, meter: Meter) -> None:
        self._engine = engine
        self._meter = meter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def generate(self, prompt: list[int], *args: Any, **kwargs: Any) -> Any:
        generation = await self._engine.generate(prompt, *args, **kwargs)
        return MeteredGeneration(generation, self._meter)

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        vectors, tokens = await self._engine.embed(texts)
        self._meter.prompt(tokens)
        return vectors, tokens


class MeteredGeneration:
    """A generation that counts each choice's tokens on the meter as they arrive (read by ``batches()``, as
    the response assembly reads every generation)."""

    def __init__(self, generation: Any, meter: Meter) -> None:
        self._generation = generation
        self._meter = meter
        self._seen: dict[int, int] = {}  # choice -> completion tokens counted
        self._prompt_counted = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._generation, name)

    def _count(self, chunk: Chunk) -> None:
        if not self._prompt_counted and chunk.prompt_tokens:
            self._prompt_counted = True
            self._meter.prompt(chunk.prompt_tokens, chunk.cached_tokens)
        self._meter.completion(chunk.completion_tokens - self._seen.get(chunk.index, 0))
        self._seen[chunk.index] = max(self._seen.get(chunk.index, 0), chunk.completion_tokens)

    async def batches(self) -> AsyncIterator[list[Chunk]]:
        async for ready in self._generation.batches():
            for chunk in ready:
                self._count(chunk)
            yield ready


def accounting(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: a meter per request, the ``x-ratelimit-*`` headers, the meter's end, and draining."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        state = scope["app"].state  # type: ignore[typeddict-item]
        meter = Meter(scope["method"], scope["path"], metrics=state.get("metrics"))  # type: ignore[typeddict-item]
        scope.setdefault("state", {})[METER] = meter  # type: ignore[typeddict-item]
        if state.get("draining") and not scope["path"].startswith("/health"):
            await _refuse_draining(send)
            meter.finish(503, state.get("access_log"))
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
            meter.finish(status, state.get("access_log"))

    return middleware


async def _refuse_draining(send: Send) -> None:
    body = b'{"error": {"message": "The server is shutting down; retry shortly.", "type": "server_error", ' \
        b'"param": null, "code": "shutting_down"}}'  # fmt: skip
    headers = [(b"content-type", b"application/json"), (b"retry-after", b"5"), (b"connection", b"close")]
    start: Any = {"type": "http.response.start", "status": 503, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})
