"""Upstream engines under one model id: replicas, health, failover, a circuit breaker.

An :class:`UpstreamPool` is what the model registry holds for an ``[[upstream]]`` id, beside local
engines. Each request goes to the healthy replica with the fewest outstanding requests (per unit of
``weight``). A replica that cannot be reached before the first byte (a refused connection, a connect
timeout, a 502/503 from it) is marked failed and the next one is tried; three failures in a row take a
replica out for 30 s. A background task asks each replica's ``GET /models`` every 10 s. The upstream's
key comes from an environment variable named in the config: it is sent to the upstream only, and never
appears in a response or a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge_run.errors import UpstreamUnavailable

__all__ = ["Replica", "UpstreamPool"]

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # httpx is imported where a pool first loads: most servers have none (0.1 s of every start)
    import httpx

HEALTH_EVERY = 10.0
HEALTH_TIMEOUT = 5.0
TRIP_AFTER = 3  # failures in a row that open the circuit
OPEN_FOR = 30.0  # seconds a tripped replica stays out


@dataclass(eq=False)
class Replica:
    """One OpenAI-compatible server behind an id."""

    base_url: str
    model: str  # the upstream's own id for the model
    api_key_env: str | None = None
    weight: float = 1.0
    timeout: float = 600.0
    outstanding: int = 0
    failures: int = 0  # in a row
    open_until: float = 0.0
    healthy: bool = True
    last_error: str | None = None

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/")

    def secret(self) -> str | None:
        """The upstream's key, read from the environment at each use (also to scrub it from answers)."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def headers(self) -> dict[str, str]:
        key = self.secret()
        return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass(eq=False)
class UpstreamPool:
    """Replicas of one model id; shaped like an engine for the registry (``inflight``, ``load``, ``close``)."""

    model_id: str
    replicas: list[Replica]
    clock: Callable[[], float] = time.monotonic
    client: httpx.AsyncClient | None = None
    _health: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def inflight(self) -> int:
        return sum(r.outstanding for r in self.replicas)

    async def load(self) -> None:
        import httpx

        if self.client is None:
            self.client = httpx.AsyncClient(timeout=httpx.Timeout(600, connect=5))
        await self.check()
        self._health = asyncio.create_task(self._watch())

    async def close(self) -> None:
        if self._health is not None:
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health
        if self.client is not None:
            await self.client.aclose()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_EVERY)
            await self.check()

    async def check(self) -> None:
        """Ask every replica's ``/models``; a replica that answers 200 is healthy."""
        import httpx

        async def one(replica: Replica) -> None:
            assert self.client is not None
            try:
                r = await self.client.get(replica.url + "/models", headers=replica.headers(), timeout=HEALTH_TIMEOUT)
                replica.healthy = r.status_code == 200
                replica.last_error = None if replica.healthy else f"GET /models answered {r.status_code}"
            except httpx.HTTPError as exc:
                replica.healthy, replica.last_error = False, type(exc).__name__

        await asyncio.gather(*(one(r) for r in self.replicas))

    def status(self) -> dict[str, Any]:
        now = self.clock()
        replicas = [
            {
                "base_url": r.url,
                "healthy": r.healthy,
                "circuit": "open" if r.open_until > now else "closed",
                "outstanding": r.outstanding,
                "last_error": r.last_error,
            }
            for r in self.replicas
        ]
        return {
            "id": self.model_id,
            "backend": "upstream",
            "replicas": replicas,
            "healthy": any(r["healthy"] and r["circuit"] == "closed" for r in replicas),
            "slots_busy": self.inflight,
            "slots_total": 0,
            "queued": 0,
        }

    def pick(self, tried: set[int]) -> Replica | None:
        """The replica to try next: closed circuit, healthy first, fewest outstanding per unit of weight."""
        now = self.clock()
        open_ = [r for r in self.replicas if id(r) not in tried and r.open_until <= now]
        if not open_:
            return None
        return min(open_, key=lambda r: (not r.healthy, r.outstanding / max(r.weight, 1e-9)))

    def _failed(self, replica: Replica, reason: str) -> None:
        replica.outstanding -= 1
        replica.failures += 1
        replica.last_error = reason
        if replica.failures >= TRIP_AFTER:
            replica.open_until = self.clock() + OPEN_FOR
            replica.healthy = False
            log.warning("upstream %s for %s taken out for %.0f s: %s", replica.url, self.model_id, OPEN_FOR, reason)

    async def send(self, path: str, body: dict[str, Any]) -> tuple[Replica, httpx.Response]:
        """POST ``body`` (its ``model`` replaced by the replica's) to the first replica that answers.

        The response is streamed (its body not read yet); the caller must ``aclose`` it and then call
        :meth:`done`. Raises ``UpstreamUnavailable`` when no replica answers.
        """
        import httpx

        assert self.client is not None, "the pool is not loaded"
        tried: set[int] = set()
        timed_out = False
        while (replica := self.pick(tried)) is not None:
            tried.add(id(replica))
            payload = {**body, "model": replica.model}
            request = self.client.build_request(
                "POST", replica.url + path, json=payload, headers=replica.headers(), timeout=replica.timeout
            )
            replica.outstanding += 1  # counted from now: requests sent at once spread over the replicas
            try:
                response = await self.client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError) as exc:
                self._failed(replica, type(exc).__name__)
                continue
            except httpx.TimeoutException as exc:
                self._failed(replica, type(exc).__name__)
                timed_out = True
                continue
            except BaseException:
                replica.outstanding -= 1
                raise
            if response.status_code in (502, 503):  # the replica is up but cannot serve: try another
                await response.aclose()
                self._failed(replica, f"answered {response.status_code}")
                continue
            replica.failures = 0
            return replica, response
        if timed_out:
            raise UpstreamUnavailable(f"no upstream for `{self.model_id}` answered in time", status=504)
        if any(r.open_until > self.clock() for r in self.replicas) and len(tried) < len(self.replicas):
            raise UpstreamUnavailable(
                f"every upstream for `{self.model_id}` is failing; retry shortly", status=503, retry_after=10
            )
        raise UpstreamUnavailable(f"no upstream for `{self.model_id}` could be reached", status=502)

    def done(self, replica: Replica) -> None:
        replica.outstanding -= 1
