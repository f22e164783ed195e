"""Build a server from settings: the models it offers, their registry and the app (``cli.serve`` prints and runs it)."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_run.config import Settings, physical_cores
from edge_run.engine import CoreShare, Engine, EngineOptions, Placement, gpu_devices, read_layout
from edge_run.errors import EngineFailure
from edge_run.gguf import projector_inputs
from edge_run.models.catalog import Catalog, load_catalog
from edge_run.models.fetch import fetch
from edge_run.models.inventory import catalog_spec, inventory, lookup
from edge_run.models.library import HeaderCache, Library, Machine, Sizing, kv_tokens
from edge_run.models.manage import ModelFiles
from edge_run.models.registry import ModelRegistry, ModelSpec
from edge_run.upstream.pool import Replica, UpstreamPool

if TYPE_CHECKING:
    from litestar import Litestar

    from edge_run.api.deps import Services
    from edge_run.api.http.access_log import AccessLog
    from edge_run.keys import KeyStore
    from edge_run.paths import Paths
    from edge_run.serving.media import ImageFetcher

__all__ = [
    "BUDGET_SHARE",
    "Server",
    "app_services",
    "build_server",
    "describe_placement",
    "engine_options",
    "library",
    "machine",
    "memory_budget",
    "model_cost",
    "model_kind",
    "run",
    "spec_options",
]

BUDGET_SHARE = 0.75  # of RAM, or of free GPU memory when offloading: what loaded models may take by default


@dataclass
class Server:
    app: Litestar
    registry: ModelRegistry
    preload: list[str]
    options: EngineOptions


def engine_options(settings: Settings, cores: CoreShare | None = None) -> EngineOptions:
    """The engine options every model starts from (a ``[[model]]`` table may change some)."""
    return EngineOptions(
        ctx=settings.ctx,
        threads=settings.threads or physical_cores(),
        gpu_layers=settings.gpu_layers,
        slots=settings.slots,
        max_queue=settings.max_queue,
        batch=settings.batch,
        draft_max=settings.draft_max,
        reasoning_format=settings.reasoning_format,
        reasoning_budget=settings.reasoning_budget,
        pooling=settings.pooling,
        device_sampling=settings.device_sampling,
        mmproj_offload=settings.mmproj_offload,
        cores=cores,
    )


def spec_options(spec: ModelSpec, base: EngineOptions) -> EngineOptions:
    slots = spec.slots or base.slots
    return dataclasses.replace(
        base,
        ctx=spec.ctx or base.ctx,
        slots=slots,
        batch=max(base.batch, 2 * slots),
        gpu_layers=base.gpu_layers if spec.gpu_layers is None else spec.gpu_layers,
        chat_template=spec.chat_template,
        rpc_servers=spec.rpc_servers,
        kind=spec.kind,
        pooling=spec.pooling or base.pooling,
        mmproj=spec.mmproj,
    )


def _sized(spec: ModelSpec, base: EngineOptions) -> ModelSpec:
    """The spec with the ctx and slots it runs with, so that /health tells them before the model is loaded,
    and its kind (chat, embedding or rerank), from its GGUF header and pooling."""
    options = spec_options(spec, base)
    try:
        inputs = projector_inputs(spec.mmproj) if spec.mmproj is not None else ("text",)
    except EngineFailure:  # loading the model says why
        inputs = ("text",)
    kind = model_kind(spec, options.pooling)
    return dataclasses.replace(spec, ctx=options.ctx, slots=options.slots, kind=kind, inputs=inputs)


def model_kind(spec: ModelSpec, pooling: str | None) -> str:
    """chat, embedding or rerank: what the GGUF's architecture and pooling say, or ``--pooling rank``."""
    if pooling == "rank":
        return "rerank"
    try:
        return read_layout(spec.path).kind if spec.path.is_file() else "chat"
    except EngineFailure:
        return "chat"


def upstream_pools(settings: Settings) -> dict[str, UpstreamPool]:
    """The ``[[upstream]]`` tables by id: tables that share an id are replicas of one pool."""
    pools: dict[str, UpstreamPool] = {}
    for table in settings.upstream:
        replica = Replica(
            base_url=table.base_url,
            model=table.model or table.id,
            api_key_env=table.api_key_env,
            weight=table.weight,
            timeout=table.timeout,
        )
        pools.setdefault(table.id, UpstreamPool(table.id, [])).replicas.append(replica)
    return pools


def _check_links(specs: list[ModelSpec], pools: dict[str, UpstreamPool]) -> None:
    for spec in specs:
        if spec.id in pools:
            raise ValueError(f"`{spec.id}` is both a local model and an [[upstream]] id; rename one")
        if spec.overflow is not None and spec.overflow not in pools:
            raise ValueError(f"model `{spec.id}` overflows to `{spec.overflow}`, which is no [[upstream]] id")


def model_cost(spec: ModelSpec, options: EngineOptions) -> int:
    """Bytes a model takes loaded, estimated: its file, plus the KV cache of ctx x slots tokens (f16); an
    embedder or a reranker has no slots, only its batch's cache."""
    size = sum(p.stat().st_size for p in (spec.path, spec.mmproj) if p is not None and p.is_file())  # the projector too
    try:
        layout = read_layout(spec.path)
    except EngineFailure:
        return size
    tokens = kv_tokens(spec.kind, Sizing(ctx=options.ctx, slots=options.slots, batch=options.batch))
    return size + layout.kv_bytes(tokens)


def memory_budget(settings: Settings) -> int | None:
    """``--memory-budget`` in bytes, or 75% of free GPU memory when offloading, else of RAM (None if unknown)."""
    if settings.memory_budget is not None:
        return int(settings.memory_budget * (1 << 30))
    devices = gpu_devices() if settings.gpu_layers != 0 else []
    if devices:
        return int(BUDGET_SHARE * sum(d.free for d in devices))
    ram = _total_ram()
    return None if ram is None else int(BUDGET_SHARE * ram)


def _total_ram() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # Windows has no sysconf
        return None


def machine(settings: Settings, *, ram: int | None = None, gpu_free: int | None = None) -> Machine:
    """What loaded models may take here, as the memory budget counts it: ``BUDGET_SHARE`` of RAM and of free GPU
    memory (``--memory-budget`` caps both). ``ram`` and ``gpu_free`` (bytes) stand in for this machine's."""
    if ram is None:
        ram = _total_ram() or 0
    if gpu_free is None:
        gpu_free = sum(d.free for d in gpu_devices()) if settings.gpu_layers != 0 else 0
    cap = memory_budget(settings) if settings.memory_budget is not None else None
    ram, gpu = int(BUDGET_SHARE * ram), int(BUDGET_SHARE * gpu_free)
    return Machine(ram=min(ram, cap) if cap else ram, gpu=min(gpu, cap) if cap else gpu)


def library(settings: Settings, paths: Paths) -> Library:
    """The library as ``GET /v1/library`` shows it: headers from the disk cache only, this machine as it is now."""
    sizing = Sizing(ctx=settings.ctx, slots=settings.slots, batch=settings.batch)
    return Library(load_catalog(), HeaderCache(paths.library_cache), machine(settings), sizing)


def _bundled() -> Path | None:
    """The folder of catalog models a one-file binary carries (``build.py --embed-default-model``)."""
    if getattr(sys, "frozen", False):
        return Path(getattr(sys, "_MEIPASS", "")) / "models"
    return None


def _resolve_preloads(
    wanted: list[str], specs: list[ModelSpec], paths: Paths, catalog: Catalog
) -> tuple[list[ModelSpec], list[str]]:
    """The specs, plus any that ``--model`` adds (a GGUF path, a catalog model to download), and the ids to preload.

    With no model at all (a fresh machine), the catalog's default is downloaded and offered.
    """
    by_id = {s.id: s for s in specs}
    ids: list[str] = []
    for want in wanted:
        spec = lookup(want, list(by_id.values()), catalog, download_to=paths.models_dir)
        by_id[spec.id] = spec
        ids.append(spec.id)
    if not by_id:
        entry = catalog.default_entry
        by_id[entry.id] = catalog_spec(entry, fetch(entry, paths.models_dir))
    return sorted(by_id.values(), key=lambda s: s.id), ids


def app_services(
    registry: ModelRegistry,
    keys: KeyStore | None,
    *,
    preload: Iterable[str] = (),
    cores: CoreShare | None = None,
    login_code: str | None = None,
    access_log: AccessLog | None = None,
    library: Library | None = None,
    files: ModelFiles | None = None,
    images: bool = False,
) -> Services:
    """The app's long-lived objects around ``registry``. ``keys=None`` turns auth off, and with it limits and usage.

    ``preload`` names the models loaded at start-up; ``/health`` answers 503 until they are. ``login_code``
    is a one-time code the web page can trade for an API key; ``access_log`` gets a line per request; ``files``
    are the model files Ollama's pull, copy and delete change.
    """
    # the HTTP layer loads only to serve: `models` commands use this module's helpers too
    from edge_run.api.deps import Services
    from edge_run.api.http.health import Preload
    from edge_run.api.http.metrics import Metrics
    from edge_run.api.responses.store import ResponseStore
    from edge_run.api.web.routes import LoginCodes
    from edge_run.keys.limits import Limiter
    from edge_run.keys.usage import UsageLog
    from edge_run.models.changes import ModelChanges

    usage = UsageLog(keys) if keys is not None else None
    login_codes = LoginCodes()
    if login_code:
        login_codes.add(login_code)
    return Services(
        registry=registry,
        keys=keys,
        usage=usage,
        limiter=Limiter(usage) if usage is not None else None,
        metrics=Metrics(registry),
        responses=ResponseStore(),  # stored responses: 1000 at most, each for an hour
        login_codes=login_codes,
        preload=Preload(registry, list(preload)),
        cores=cores,
        access_log=access_log,
        library=library,
        files=files,
        changes=ModelChanges(files, registry) if files is not None else None,
        images=_image_fetcher() if images else None,
    )


def _image_fetcher() -> ImageFetcher:
    import httpx  # only a server that fetches image URLs loads it (0.1 s of every start otherwise)

    from edge_run.serving.media import ImageFetcher

    return ImageFetcher(httpx.AsyncClient(timeout=10, follow_redirects=True, max_redirects=3))


def build_server(settings: Settings, paths: Paths, keys: KeyStore | None, *, login_code: str | None = None) -> Server:
    """Everything ``serve`` runs, from settings; raises ``ModelNotFound``, ``ValueError``, ``FetchError``."""
    from edge_run.api.app import create_app
    from edge_run.api.http.access_log import AccessLog

    catalog = load_catalog()
    specs = inventory(paths, catalog, settings.model, bundled=_bundled())
    specs, preload = _resolve_preloads(settings.preload, specs, paths, catalog)
    cores = CoreShare(settings.threads or physical_cores())
    base = dataclasses.replace(engine_options(settings, cores), kernel_checks=paths.kernel_checks)
    specs = [_sized(s, base) for s in specs]
    pools = upstream_pools(settings)
    _check_links(specs, pools)
    specs += [ModelSpec(pool_id, Path(), "upstream") for pool_id in pools]
    preload = [*preload, *pools]  # an upstream "loads" at once: its health checks start

    def build(spec: ModelSpec) -> Engine | UpstreamPool:
        return pools[spec.id] if not spec.local else Engine(spec.id, spec.path, spec_options(spec, base))

    registry = ModelRegistry(
        specs,
        build,
        cost=lambda spec: model_cost(spec, spec_options(spec, base)),
        keep_alive=settings.keep_alive,
        max_loaded=settings.max_loaded,
        budget=memory_budget(settings),
        sized=lambda spec: _sized(spec, base),
    )
    access_log = AccessLog(paths.log_dir, settings.log_format)
    services = app_services(
        registry,
        keys,
        preload=preload,
        cores=cores,
        login_code=login_code,
        access_log=access_log,
        library=library(settings, paths),
        files=ModelFiles(paths, list(settings.model)),
        images=settings.allow_image_urls,
    )
    app = create_app(
        services,
        metrics_public=settings.metrics_public,
        max_body_bytes=settings.max_body_bytes,
        allowed_hosts=[settings.host, *settings.allowed_hosts],
        cors_origins=settings.cors_origins,
        ollama_no_key=settings.ollama_no_key,
    )
    return Server(app, registry, preload, base)


def describe_placement(spec: ModelSpec, base: EngineOptions) -> str:
    """Where ``serve`` would put a model's layers on this machine (the banner, ``models show``)."""
    return Placement.resolve(spec.path, spec_options(spec, base)).describe()


def run(server: Server, settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; then new requests get 503 while running answers finish (``drain_timeout``)."""
    import uvicorn

    app = server.app

    class Draining(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
            app.state.draining = True
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,  # edge-run writes its own (api/http/access_log.py)
        timeout_graceful_shutdown=settings.drain_timeout,
    )
    try:
        Draining(config).run()
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: the stop was clean (as uvicorn.run does)
        pass
