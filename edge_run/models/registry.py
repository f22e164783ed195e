"""The models a server offers, and their lifecycles: load on first use, unload when idle, evict the least used.

Every model the user has is listed, loaded or not. A request holds its model for as long as it runs
(:meth:`ModelRegistry.use`); a model that is not loaded is loaded first, once however many requests wait
for it. A load that would pass ``max_loaded`` models, or the memory budget, first unloads the least
recently used idle model; a busy model is never unloaded under its requests, so the load waits for one
to go idle, up to ``wait`` seconds, then gives up with a 503 and ``Retry-After``. Idle models unload after
their keep-alive: the server's, or the one the latest request to them asked for.

Loads and unloads happen one at a time: each changes what fits, and on a small machine two loads at once
only slow each other down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from edge_run.errors import ModelBusy, ModelNotFound, ModelUnavailable

__all__ = ["Backend", "ModelEntry", "ModelRegistry", "ModelSpec", "Status"]

log = logging.getLogger(__name__)

Status = Literal["loaded", "loading", "unloaded", "failed"]
TICK = 0.25  # seconds between keep-alive checks


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model the server can load: its id, file, where it came from, and settings of its own."""

    id: str
    path: Path
    source: str  # catalog, local, hf, config, path or upstream
    ctx: int | None = None  # None: the server's setting
    slots: int | None = None
    gpu_layers: int | None = None
    chat_template: str | None = None
    overflow: str | None = None  # an upstream id that takes requests when this model is full
    rpc_servers: tuple[str, ...] = ()
    kind: str = "chat"  # chat, embedding (embeds only) or rerank (scores pairs only): from the GGUF header
    pooling: str | None = None  # how it pools embeddings (mean, cls, last, rank); None: the model's own
    dimensions: tuple[int, ...] = ()  # the sizes a Matryoshka-trained embedder may be cut to
    query_prefix: str = ""  # an embedder's instruction prefixes, added when a request asks (`input_type`)
    document_prefix: str = ""
    mmproj: Path | None = None  # a multimodal projector: images (and audio) in
    inputs: tuple[str, ...] = ("text",)  # what its prompts may hold: from the projector's header

    @property
    def capabilities(self) -> tuple[str, ...]:
        """What the model serves: a chat model also embeds (mean-pooled)."""
        return {"embedding": ("embedding",), "rerank": ("rerank",)}.get(self.kind, ("chat", "embedding"))

    @property
    def local(self) -> bool:
        """Runs here (counts toward ``max_loaded`` and the budget, unloads when idle); upstreams do not."""
        return self.source != "upstream"


class Backend(Protocol):
    """What the registry needs of a loaded model (the engine, or a fake one in unit tests)."""

    @property
    def inflight(self) -> int: ...

    async def load(self) -> None: ...

    async def close(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


@dataclass(eq=False)
class ModelEntry:
    """One model's state in a running server."""

    spec: ModelSpec
    keep_alive: float
    status: Status = "unloaded"
    backend: Backend | None = None
    error: str | None = None
    pins: int = 0  # requests using it, or waiting for it to load
    last_used: float = 0.0  # when it was last seen busy
    loads: int = 0
    unloads: int = 0
    cost: int | None = None  # bytes it takes loaded (estimated)
    loading: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def busy(self) -> bool:
        return self.pins > 0 or (self.backend is not None and self.backend.inflight > 0)


class ModelRegistry:
    """Models by id; an unknown id is an error, never a silent fallback to another model.

    Args:
        specs: every model offered.
        build: makes a model's (unloaded) backend.
        cost: a model's memory estimate in bytes, when loaded.
        keep_alive: seconds an idle model stays loaded; 0 unloads after each answer, -1 never.
        max_loaded: models loaded at once.
        budget: bytes all loaded models may take together; None: no limit.
        wait: seconds a load waits for a busy model to go idle before answering 503.
        sized: a spec added while serving (:meth:`add`), completed as the server completes its own at start.
    """

    def __init__(
        self,
        specs: list[ModelSpec],
        build: Callable[[ModelSpec], Backend],
        *,
        cost: Callable[[ModelSpec], int],
        keep_alive: float = 300,
        max_loaded: int = 2,
        budget: int | None = None,
        wait: float = 60,
        clock: Callable[[], float] = time.monotonic,
        sized: Callable[[ModelSpec], ModelSpec] = lambda spec: spec,
    ) -> None:
        self._entries = {spec.id: ModelEntry(spec, keep_alive) for spec in specs}
        self._sized = sized
        self._build = build
        self._cost = cost
        self.keep_alive = keep_alive
        self.max_loaded = max_loaded
        self.budget = budget
        self.wait = wait
        self._clock = clock
        self._lock = asyncio.Lock()  # loads and unloads, one at a time
        self._changed = asyncio.Event()  # a model went idle or was unloaded
        self._reaper: asyncio.Task[None] | None = None

    # -- lookups ---------------------------------------------------------------------

    def entry(self, model_id: str) -> ModelEntry:
        entry = self._entries.get(model_id)
        if entry is None:
            raise ModelNotFound(model_id)
        return entry

    def __iter__(self) -> Any:
        return iter(self._entries.values())

    def expires_in(self, entry: ModelEntry) -> float | None:
        """Seconds until an idle loaded model unloads; None when it is busy, not loaded, or kept forever."""
        if entry.status != "loaded" or entry.busy or entry.keep_alive < 0 or not entry.spec.local:
            return None
        return max(0.0, entry.last_used + entry.keep_alive - self._clock())

    def cost(self, entry: ModelEntry) -> int:
        if not entry.spec.local:
            return 0
        if entry.cost is None:
            entry.cost = self._cost(entry.spec)
        return entry.cost

    # -- models added and removed while serving ------------------------------------

    def add(self, spec: ModelSpec) -> ModelEntry:
        """Offer a model pulled or copied while serving; an id already offered keeps its entry if it is in use."""
        old = self._entries.get(spec.id)
        if old is not None and (old.busy or old.status != "unloaded"):
            return old
        entry = ModelEntry(self._sized(spec), self.keep_alive)
        self._entries = dict(sorted({**self._entries, spec.id: entry}.items()))
        return entry

    async def remove(self, model_id: str) -> None:
        """Stop offering a model, unloading it first; a model in use is not removed (503, retry)."""
        entry = self.entry(model_id)
        async with self._lock:
            if entry.busy or entry.loading is not None:
                raise ModelUnavailable(f"model `{model_id}` is in use; retry once its requests finish", retry_after=5)
            if entry.backend is not None:
                await self._unload(entry)
            # a new dict, not a change to the one a loop over the models may be iterating
            self._entries = {k: v for k, v in self._entries.items() if k != model_id}

    async def unload(self, model_id: str) -> None:
        """Unload a model now (``POST /v1/models/{id}/unload``); one not loaded stays so. A busy model is not
        unloaded under its requests: ``ModelBusy`` (409)."""
        entry = self.entry(model_id)
        async with self._lock:
            if entry.busy or entry.loading is not None:
                raise ModelBusy(f"model `{model_id}` is answering requests; unload it once they finish")
            if entry.backend is not None:
                await self._unload(entry)
                self._changed.set()

    # -- requests --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def use(self, model_id: str, keep_alive: float | None = None) -> AsyncIterator[Any]:
        """Hold the model for one request, loading it first if need be; yields its backend.

        ``keep_alive`` (seconds) replaces the model's keep-alive from now on; None restores the server's.
        """
        entry = self.entry(model_id)
        entry.pins += 1
        try:
            backend = await self._loaded(entry)
            entry.keep_alive = self.keep_alive if keep_alive is None else keep_alive
            yield backend
        finally:
            entry.pins -= 1
            entry.last_used = self._clock()
            self._changed.set()

    async def _loaded(self, entry: ModelEntry) -> Backend:
        while True:
            if entry.status == "loaded" and entry.backend is not None:
                return entry.backend
            if entry.loading is None:
                entry.loading = asyncio.create_task(self._load(entry))
            # shielded: a client that leaves must not cancel a load that others wait for
            await asyncio.shield(entry.loading)

    async def preload(self, model_ids: list[str]) -> None:
        """Load these models now (at start-up); a failure is logged and the model reads ``failed``."""
        for model_id in model_ids:
            try:
                async with self.use(model_id):
                    pass
            except ModelUnavailable as exc:
                log.error("%s", exc.message)

    # -- loading and unloading -----------------------------------------------------

    async def _load(self, entry: ModelEntry) -> None:
        try:
            async with self._lock:
                entry.status, entry.error = "loading", None
                try:
                    await self._make_room(entry)
                    backend = self._build(entry.spec)
                    try:
                        await backend.load()
                    except BaseException:
                        await backend.close()
                        raise
                except ModelUnavailable as exc:
                    entry.status, entry.error = ("unloaded" if exc.retry_after else "failed"), exc.message
                    raise
                except Exception as exc:
                    entry.status, entry.error = "failed", str(exc) or type(exc).__name__
                    raise ModelUnavailable(f"model `{entry.spec.id}` failed to load: {entry.error}") from exc
                entry.backend, entry.status = backend, "loaded"
                entry.loads += 1
                entry.last_used = self._clock()
                log.info("loaded %s", entry.spec.id)
        finally:
            entry.loading = None

    async def _make_room(self, entry: ModelEntry) -> None:
        """Unload idle models, least recently used first, until ``entry`` fits; wait for busy ones, bounded."""
        need = self.cost(entry)
        if self.budget is not None and need > self.budget:
            raise ModelUnavailable(
                f"model `{entry.spec.id}` needs about {need / 2**30:.2f} GiB, more than the memory budget of "
                f"{self.budget / 2**30:.2f} GiB (--memory-budget)"
            )
        deadline = self._clock() + self.wait
        while True:
            loaded = [e for e in self._entries.values() if e.status == "loaded" and e.spec.local]
            over_count = entry.spec.local and len(loaded) + 1 > self.max_loaded
            over_budget = self.budget is not None and sum(map(self.cost, loaded)) + need > self.budget
            if not over_count and not over_budget:
                return
            idle = sorted((e for e in loaded if not e.busy), key=lambda e: e.last_used)
            if idle:
                log.info("unloading %s to make room for %s", idle[0].spec.id, entry.spec.id)
                await self._unload(idle[0])
                continue
            left = deadline - self._clock()
            if left <= 0:
                limit = f"--max-loaded {self.max_loaded}" if over_count else "the memory budget"
                raise ModelUnavailable(
                    f"model `{entry.spec.id}` does not fit beside the busy models ({limit}); retry shortly",
                    retry_after=5,
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, TICK))

    async def _unload(self, entry: ModelEntry) -> None:
        """Unload an idle model; the caller holds the lock, and checked ``busy`` with no await since."""
        backend, entry.backend, entry.status = entry.backend, None, "unloaded"
        entry.unloads += 1
        if backend is not None:
            await backend.close()

    # -- keep-alive ------------------------------------------------------------------

    async def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap())

    async def _reap(self) -> None:
        """Unload idle models whose keep-alive has run out."""
        while True:
            await asyncio.sleep(TICK)
            now = self._clock()
            for entry in self._entries.values():
                if entry.busy:
                    entry.last_used = now
            if self._lock.locked():  # a load is under way; it unloads what it must itself
                continue
            async with self._lock:
                for entry in list(self._entries.values()):
                    if self.expires_in(entry) == 0:  # checked right before: an unload awaits nothing first
                        log.info("unloading %s: idle for %.0f s", entry.spec.id, now - entry.last_used)
                        await self._unload(entry)
                        self._changed.set()

    async def close(self) -> None:
        """Stop the keep-alive task and unload everything (server shutdown)."""
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for entry in self._entries.values():
            if entry.loading is not None:
                entry.loading.cancel()
                with contextlib.suppress(BaseException):
                    await entry.loading
            if entry.backend is not None:
                await self._unload(entry)
