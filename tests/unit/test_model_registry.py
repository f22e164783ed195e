"""The model registry's lifecycles over fake backends: one load per burst, keep-alive, LRU eviction, limits."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from edge_run.errors import ModelNotFound, ModelUnavailable
from edge_run.models import registry as registry_mod
from edge_run.models.registry import ModelRegistry, ModelSpec
from tests.fakes import FakeBackend, FakeClock


def make(
    ids: tuple[str, ...] = ("a", "b", "c"),
    *,
    load_time: float = 0.05,
    fail: dict[str, str] | None = None,
    costs: dict[str, int] | None = None,
    **kwargs: Any,
) -> tuple[ModelRegistry, list[str], dict[str, FakeBackend]]:
    log: list[str] = []
    built: dict[str, FakeBackend] = {}

    def build(spec: ModelSpec) -> FakeBackend:
        built[spec.id] = FakeBackend(spec, log, load_time, (fail or {}).get(spec.id))
        return built[spec.id]

    specs = [ModelSpec(i, Path(f"/{i}.gguf"), "test") for i in ids]
    registry = ModelRegistry(specs, build, cost=lambda s: (costs or {}).get(s.id, 1), **kwargs)
    return registry, log, built


def statuses(registry: ModelRegistry) -> dict[str, str]:
    return {e.spec.id: e.status for e in registry}


@pytest.fixture(autouse=True)
def fast_ticks(monkeypatch):
    monkeypatch.setattr(registry_mod, "TICK", 0.02)


async def answer(registry: ModelRegistry, model: str, seconds: float = 0.0, **kwargs: Any) -> Any:
    """A request: hold the model, keep it busy for ``seconds`` as an admitted answer does."""
    async with registry.use(model, **kwargs) as backend:
        backend.inflight += 1
    try:
        await asyncio.sleep(seconds)
    finally:
        backend.inflight -= 1
    return backend


def test_a_burst_of_first_requests_loads_once():
    async def go() -> None:
        registry, log, _ = make()
        backends = await asyncio.gather(*(answer(registry, "a") for _ in range(20)))
        assert log == ["load a"]
        assert len({id(b) for b in backends}) == 1
        assert statuses(registry) == {"a": "loaded", "b": "unloaded", "c": "unloaded"}

    asyncio.run(go())


def test_unknown_model_is_not_found_and_never_another():
    async def go() -> None:
        registry, log, _ = make()
        with pytest.raises(ModelNotFound):
            async with registry.use("nope"):
                pass
        assert log == []

    asyncio.run(go())


def test_a_failed_load_is_503_with_the_reason_and_touches_no_other_model():
    async def go() -> None:
        registry, log, built = make(fail={"b": "bad magic"}, max_loaded=2)
        await answer(registry, "a")
        with pytest.raises(ModelUnavailable, match="bad magic") as caught:
            await answer(registry, "b")
        assert caught.value.status == 503
        assert statuses(registry)["b"] == "failed"
        assert registry.entry("b").error == "bad magic"
        assert statuses(registry)["a"] == "loaded" and not built["a"].closed
        assert built["b"].closed  # what the failed load had set up is freed
        registry._build = lambda spec: FakeBackend(spec, log, 0.01, None)  # the file was fixed: next request loads
        await answer(registry, "b")
        assert statuses(registry)["b"] == "loaded"

    asyncio.run(go())


def test_max_loaded_evicts_the_least_recently_used_idle_model():
    async def go() -> None:
        registry, log, _ = make(max_loaded=2)
        await answer(registry, "a")
        await answer(registry, "b")
        await answer(registry, "a")  # b is now the least recently used
        await answer(registry, "c")
        assert statuses(registry) == {"a": "loaded", "b": "unloaded", "c": "loaded"}
        assert log == ["load a", "load b", "close b", "load c"]

    asyncio.run(go())


def test_the_memory_budget_evicts_too_and_refuses_a_model_that_never_fits():
    async def go() -> None:
        registry, _, _ = make(costs={"a": 6, "b": 5, "c": 20}, max_loaded=3, budget=10)
        await answer(registry, "a")
        await answer(registry, "b")  # 6 + 5 > 10: a goes
        assert statuses(registry) == {"a": "unloaded", "b": "loaded", "c": "unloaded"}
        with pytest.raises(ModelUnavailable, match="memory budget") as caught:
            await answer(registry, "c")
        assert caught.value.retry_after is None  # retrying cannot help
        assert statuses(registry)["b"] == "loaded"  # nothing was evicted for a model that cannot fit

    asyncio.run(go())


def test_a_busy_model_is_never_evicted_the_load_waits_for_it():
    async def go() -> None:
        registry, log, built = make(max_loaded=1, wait=5)
        running = asyncio.create_task(answer(registry, "a", seconds=0.3))
        await asyncio.sleep(0.1)
        await answer(registry, "b")
        assert running.done()  # b loaded only after a's answer ended
        assert log == ["load a", "close a", "load b"]
        assert not built["a"].inflight

    asyncio.run(go())


def test_a_load_that_cannot_wait_long_enough_is_503_with_retry_after():
    async def go() -> None:
        registry, _, built = make(max_loaded=1, wait=0.1)
        running = asyncio.create_task(answer(registry, "a", seconds=0.5))
        await asyncio.sleep(0.05)
        with pytest.raises(ModelUnavailable, match="busy") as caught:
            await answer(registry, "b")
        assert caught.value.retry_after and caught.value.status == 503
        assert statuses(registry) == {"a": "loaded", "b": "unloaded", "c": "unloaded"}
        await running
        assert not built["a"].closed

    asyncio.run(go())


async def until(check: Any, timeout: float = 5.0) -> None:
    """Waits for the keep-alive task to make ``check()`` true (it looks every ``TICK``); fails after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "the keep-alive task did not get there"
        await asyncio.sleep(0.005)


def test_keep_alive_unloads_idle_models_and_a_request_can_change_it():
    async def go() -> None:
        clock = FakeClock()
        registry, _, _ = make(keep_alive=0.3, max_loaded=3, load_time=0.01, clock=clock)
        await registry.start()
        try:
            await answer(registry, "a")
            await answer(registry, "b", keep_alive=-1)  # never
            await answer(registry, "c", keep_alive=0)  # right after the answer
            await until(lambda: statuses(registry)["c"] == "unloaded")
            assert statuses(registry)["a"] == "loaded"
            assert registry.expires_in(registry.entry("a")) == pytest.approx(0.3)  # the clock has not moved
            clock.now += 0.4
            await until(lambda: statuses(registry)["a"] == "unloaded")
            assert statuses(registry) == {"a": "unloaded", "b": "loaded", "c": "unloaded"}
            assert registry.expires_in(registry.entry("b")) is None
        finally:
            await registry.close()
        assert statuses(registry)["b"] == "unloaded"

    asyncio.run(go())


def test_keep_alive_counts_from_the_end_of_the_answer():
    async def go() -> None:
        registry, _, _ = make(keep_alive=0.1)
        await registry.start()
        try:
            await answer(registry, "a", seconds=0.3)  # an answer longer than the keep-alive
            ended = asyncio.get_running_loop().time()
            assert statuses(registry)["a"] == "loaded"
            await until(lambda: statuses(registry)["a"] == "unloaded")
            # last seen busy at most a tick before the end
            assert asyncio.get_running_loop().time() - ended >= 0.1 - registry_mod.TICK
        finally:
            await registry.close()

    asyncio.run(go())


def test_a_client_that_leaves_does_not_cancel_a_load_others_wait_for():
    async def go() -> None:
        registry, log, _ = make(load_time=0.2)
        first = asyncio.create_task(answer(registry, "a"))
        second = asyncio.create_task(answer(registry, "a"))
        await asyncio.sleep(0.05)
        first.cancel()
        await second
        assert log == ["load a"] and statuses(registry)["a"] == "loaded"
        assert registry.entry("a").pins == 0

    asyncio.run(go())
