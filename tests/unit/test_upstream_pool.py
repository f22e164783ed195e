"""The upstream pool over httpx's mock transport: least outstanding, failover, the circuit breaker, 502/503."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from edge_run.errors import UpstreamUnavailable
from edge_run.upstream import pool as pool_mod
from edge_run.upstream.pool import Replica, UpstreamPool


def make(down: set[str], clock: list[float]) -> tuple[UpstreamPool, list[str]]:
    hits: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in down:
            raise httpx.ConnectError("refused", request=request)
        hits.append(host)
        return httpx.Response(200, json={"model": request.read().decode(), "usage": {}})

    replicas = [Replica(f"http://{h}/v1", "m") for h in ("a", "b")]
    pool = UpstreamPool("team/x", replicas, clock=lambda: clock[0])
    pool.client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return pool, hits


async def call(pool: UpstreamPool) -> str:
    replica, response = await pool.send("/chat/completions", {"model": "team/x"})
    await response.aread()
    await response.aclose()
    pool.done(replica)
    return replica.url


def test_a_refused_replica_fails_over_and_trips_after_three_failures():
    async def go() -> None:
        clock = [0.0]
        pool, hits = make({"b"}, clock)
        pool.replicas[0].outstanding = 1  # b looks less busy, so it is tried first
        for _ in range(3):
            assert await call(pool) == "http://a/v1"
        b = pool.replicas[1]
        assert b.failures == 3 and b.open_until == pool_mod.OPEN_FOR
        assert pool.status()["replicas"][1]["circuit"] == "open"
        await call(pool)
        assert b.failures == 3  # out: not tried while open
        clock[0] = pool_mod.OPEN_FOR + 1
        await call(pool)
        assert b.failures == 3  # closed again, but unhealthy: the healthy one goes first
        b.healthy = True  # as the next health check that reaches it says
        await call(pool)
        assert b.failures == 4  # tried again
        assert all(r.outstanding == (1 if r is pool.replicas[0] else 0) for r in pool.replicas)
        assert hits == ["a"] * 6

    asyncio.run(go())


def test_no_replica_reachable_is_502_and_all_tripped_is_503():
    async def go() -> None:
        clock = [0.0]
        pool, _ = make({"a", "b"}, clock)
        with pytest.raises(UpstreamUnavailable) as unreachable:
            await call(pool)
        assert unreachable.value.status == 502
        for _ in range(2):
            with pytest.raises(UpstreamUnavailable):
                await call(pool)
        with pytest.raises(UpstreamUnavailable) as tripped:
            await call(pool)
        assert tripped.value.status == 503 and tripped.value.retry_after

    asyncio.run(go())


def test_the_upstreams_key_is_sent_to_it_and_the_model_replaced(monkeypatch: pytest.MonkeyPatch):
    async def go() -> None:
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200, json={})

        monkeypatch.setenv("UP_KEY", "sk-secret")
        pool = UpstreamPool("team/x", [Replica("http://a/v1", "their-id", api_key_env="UP_KEY")])
        pool.client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        await call(pool)
        assert seen[0].headers["authorization"] == "Bearer sk-secret"
        assert b'"model":"their-id"' in seen[0].content

    asyncio.run(go())
