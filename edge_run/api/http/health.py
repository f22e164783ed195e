"""``GET /health``: liveness and every model's state, and the models named at start-up loading meanwhile."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Response, get
from litestar.di import NamedDependency

from edge_run.engine import CoreShare
from edge_run.models.registry import ModelEntry, ModelRegistry

__all__ = ["Preload", "health"]


class Preload:
    """The models named at start-up, loaded in the background so ``/health`` answers at once instead of the port
    staying shut; it says ``loading`` (503) until they are."""

    def __init__(self, registry: ModelRegistry, model_ids: list[str]) -> None:
        self._registry = registry
        self._ids = model_ids
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._registry.preload(self._ids))

    @property
    def loading(self) -> bool:
        return self._task is None or not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _model_health(registry: ModelRegistry, entry: ModelEntry) -> dict[str, Any]:
    engine = entry.backend
    expires = registry.expires_in(entry)
    figures = engine.status() if engine is not None else {"slots_total": entry.spec.slots, "slots_busy": 0}
    return {
        **figures,
        "id": entry.spec.id,
        "state": entry.status,
        "source": entry.spec.source,
        "loads": entry.loads,
        "memory_bytes": registry.cost(entry) if entry.status == "loaded" else 0,
        "keep_alive": entry.keep_alive,
        "expires_in": None if expires is None else round(expires, 1),
        "error": entry.error,
    }


@get("/health", summary="Liveness and every model's state; needs no key", exclude_from_auth=True)
async def health(
    registry: NamedDependency[ModelRegistry],
    preload: NamedDependency[Preload],
    cores: NamedDependency[CoreShare | None],
) -> Response[dict[str, Any]]:
    """``200`` once the models named at start-up are loaded (``503`` while they load)."""
    loading = preload.loading
    body = {
        "status": "loading" if loading else "ok",
        "models_loaded": sum(e.status == "loaded" for e in registry),
        "max_loaded": registry.max_loaded,
        "memory_budget_bytes": registry.budget,
        "cores": cores.cores if cores else None,
        "threads_peak": cores.peak if cores else None,  # never above cores
        "models": [_model_health(registry, e) for e in registry],
    }
    return Response(body, status_code=503 if loading else 200)
