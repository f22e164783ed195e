"""Each request's key at work: its model scope, its tokens counted as they flow, its usage recorded at the end.

The guard admits a request under its key's limits and leaves a :class:`Lease` in the ASGI scope.
Routes take their model through :func:`use_model`, which refuses models outside the key's patterns and
hands out the engine metered: every prompt and every generated token is spent on the lease at once.
The :func:`accounting` middleware sends the ``x-ratelimit-*`` headers with the response and, once the
response is over (sent in full, failed, or cut off by a client that left), frees the request's place
and records its usage.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from edge_run.errors import ModelNotFound

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from edge_run.engine.scheduler import Chunk
    from edge_run.keys.limits import Lease
    from edge_run.keys.store import KeyRecord

__all__ = ["HEADERS", "KEY", "LEASE", "accounting", "key_of", "use_model"]

KEY = "edge_run_key"  # the verified KeyRecord, in scope["state"]
LEASE = "edge_run_lease"  # the request's Lease
HEADERS = "edge_run_ratelimit"  # x-ratelimit-* headers to send


def key_of(connection: ASGIConnection) -> KeyRecord | None:
    """The request's key; None when auth is off."""
    return connection.scope.get("state", {}).get(KEY)


@contextlib.asynccontextmanager
async def use_model(connection: ASGIConnection, model: str, keep_alive: float | None) -> AsyncIterator[Any]:
    """The model's engine for one request (see :meth:`ModelRegistry.use`), within the key's scope, metered."""
    key = key_of(connection)
    if key is not None and not key.allows(model):
        raise ModelNotFound(model)  # the same answer as for a model that does not exist
    lease: Lease | None = connection.scope.get("state", {}).get(LEASE)
    async with connection.app.state.registry.use(model, keep_alive) as engine:
        if lease is None:
            yield engine
        else:
            lease.model = model
            yield MeteredEngine(engine, lease)


class MeteredEngine:
    """An engine whose generations and embeddings spend their tokens on a lease."""

    def __init__(self, engine: Any, lease: Lease) -> None:
        self._engine = engine
        self._lease = lease

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def generate(self, prompt: list[int], *args: Any, **kwargs: Any) -> Any:
        generation = await self._engine.generate(prompt, *args, **kwargs)
        return MeteredGeneration(generation, self._lease)

    async def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        vectors, tokens = await self._engine.embed(texts)
        self._lease.prompt(tokens)
        return vectors, tokens


class MeteredGeneration:
    """A generation that spends each choice's tokens on the lease as they arrive."""

    def __init__(self, generation: Any, lease: Lease) -> None:
        self._generation = generation
        self._lease = lease
        self._seen: dict[int, int] = {}  # choice -> completion tokens counted
        self._prompt_counted = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._generation, name)

    def _count(self, chunk: Chunk) -> None:
        if not self._prompt_counted and chunk.prompt_tokens:
            self._prompt_counted = True
            self._lease.prompt(chunk.prompt_tokens, chunk.cached_tokens)
        self._lease.completion(chunk.completion_tokens - self._seen.get(chunk.index, 0))
        self._seen[chunk.index] = max(self._seen.get(chunk.index, 0), chunk.completion_tokens)

    async def batches(self) -> AsyncIterator[list[Chunk]]:
        async for ready in self._generation.batches():
            for chunk in ready:
                self._count(chunk)
            yield ready

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        async for ready in self.batches():
            for chunk in ready:
                yield chunk


def accounting(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: the ``x-ratelimit-*`` headers on the response, and the lease's end."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = scope.get("state", {}).get(HEADERS)
                if extra:
                    encoded = [(k.encode(), v.encode()) for k, v in extra.items()]
                    message = {**message, "headers": [*message.get("headers", []), *encoded]}  # type: ignore[typeddict-item]
            await send(message)

        try:
            await app(scope, receive, send_with_headers)
        finally:
            lease: Lease | None = scope.get("state", {}).get(LEASE)
            if lease is not None:
                lease.finish(status)

    return middleware
