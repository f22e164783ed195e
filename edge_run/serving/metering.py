"""One request's figures as its tokens flow: the key's lease charged, the metrics fed, the totals kept.

A :class:`Meter` lives as long as its request. :class:`MeteredEngine` hands out generations that count
every prompt and every generated token on it at once (read by ``batches()``, as the response assembly
reads every generation), and embeddings that count their tokens. The HTTP layer makes the meter, puts
the key and its lease on it, and ends it when the response is over (:mod:`edge_run.api.http.accounting`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edge_run.engine import Chunk
    from edge_run.keys.limits import Lease
    from edge_run.keys.store import KeyRecord

__all__ = ["Meter", "MeteredEngine", "TokenMetrics"]


class TokenMetrics(Protocol):
    """Where a meter reports tokens as they flow (the app's Prometheus metrics)."""

    def prompt(self, model: str, tokens: int, cached: int) -> None: ...

    def completion(self, model: str, tokens: int, *, first_after: float | None, gap: float | None) -> None:
        """``first_after``: seconds from the request's arrival, for its first tokens; ``gap``: per token, later."""


@dataclass(eq=False)
class Meter:
    """One request's figures."""

    method: str
    path: str
    started: float = field(default_factory=time.monotonic)
    wall: float = field(default_factory=time.time)
    key: KeyRecord | None = None
    lease: Lease | None = None
    metrics: TokenMetrics | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0  # told by the response assembly once the answer is over
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
            self.metrics.prompt(self.model, tokens, cached)

    def completion(self, tokens: int) -> None:
        if tokens <= 0:
            return
        now = time.monotonic()
        self.completion_tokens += tokens
        if self.lease is not None:
            self.lease.spend(tokens)
        if self.metrics is not None and self.model is not None:
            first_after = now - self.started if self.first_token is None else None
            gap = (now - self.last_token) / tokens if first_after is None and self.last_token is not None else None
            self.metrics.completion(self.model, tokens, first_after=first_after, gap=gap)
        self.first_token = self.first_token or now
        self.last_token = now


class MeteredEngine:
    """An engine whose generations and embeddings count their tokens on a meter."""

    def __init__(self, engine: Any, meter: Meter) -> None:
        self._engine = engine
        self._meter = meter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    async def generate(self, prompt: list[int], *args: Any, **kwargs: Any) -> Any:
        generation = await self._engine.generate(prompt, *args, **kwargs)
        return _MeteredGeneration(generation, self._meter)

    async def embed(self, inputs: list[str] | list[list[int]], *, truncate: bool = False) -> tuple[list[Any], int]:
        vectors, tokens = await self._engine.embed(inputs, truncate=truncate)
        self._meter.prompt(tokens)
        return vectors, tokens

    async def rerank(self, query: str, documents: list[str], *, truncate: bool = False) -> tuple[list[float], int]:
        scores, tokens = await self._engine.rerank(query, documents, truncate=truncate)
        self._meter.prompt(tokens)
        return scores, tokens


class _MeteredGeneration:
    """A generation that counts each choice's tokens on the meter as they arrive."""

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
