"""What the routes get by dependency injection: the server's long-lived objects, and each request's way to a model.

:class:`Services` holds everything ``server.build_server`` builds for the app; :func:`dependencies` offers
each of them to the handlers by name (Litestar's ``Provide``). :class:`ModelAccess` is a request's way
to its model: the key's limits, the key's scope, the registry, and an upstream's answer relayed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from litestar import Request, Response
from litestar.di import NamedDependency, Provide

from edge_run.api.http.accounting import meter_of
from edge_run.api.relay import relay
from edge_run.errors import InvalidRequest, ModelNotFound, Overloaded, RateLimited, UnsupportedTask
from edge_run.keys.limits import Limiter
from edge_run.models.registry import ModelRegistry, ModelSpec
from edge_run.serving.media import ImageFetcher, fetch_images
from edge_run.serving.metering import MeteredEngine
from edge_run.upstream.pool import UpstreamPool

if TYPE_CHECKING:
    from edge_run.api.http.access_log import AccessLog
    from edge_run.api.http.health import Preload
    from edge_run.api.http.metrics import Metrics
    from edge_run.api.responses.store import ResponseStore
    from edge_run.api.web.routes import LoginCodes
    from edge_run.engine import CoreShare
    from edge_run.keys import KeyStore
    from edge_run.keys.usage import UsageLog
    from edge_run.models.changes import ModelChanges
    from edge_run.models.library import Library
    from edge_run.models.manage import ModelFiles
    from edge_run.serving.request import GenRequest

__all__ = ["ModelAccess", "Services", "dependencies"]

T = TypeVar("T")


@dataclass(frozen=True)
class Services:
    """The app's long-lived objects. ``keys=None`` turns auth off (and with it limits and usage)."""

    registry: ModelRegistry
    keys: KeyStore | None
    usage: UsageLog | None
    limiter: Limiter | None
    metrics: Metrics
    responses: ResponseStore  # stored responses (``store: true``)
    login_codes: LoginCodes  # one-time codes the web page trades for a key
    preload: Preload
    cores: CoreShare | None = None  # the CPU budget the models share, reported by /health
    access_log: AccessLog | None = None
    library: Library | None = None  # the models one can pull, and what fits (``GET /v1/library``)
    files: ModelFiles | None = None  # the model files Ollama's pull, copy and delete change (None: they 400)
    changes: ModelChanges | None = None  # pulls under way, and models forgotten (None without ``files``)
    images: ImageFetcher | None = None  # images by URL (``--allow-image-urls``); None: refused


def _constant(value: object) -> Provide:
    return Provide(lambda: value, sync_to_thread=False, use_cache=True)


def dependencies(services: Services) -> dict[str, Provide]:
    """Every long-lived object by the name a handler asks for it, and ``access`` (a request's :class:`ModelAccess`)."""
    named = {
        "registry": services.registry,
        "keys": services.keys,
        "usage_log": services.usage,
        "limiter": services.limiter,
        "metrics": services.metrics,
        "responses": services.responses,
        "login_codes": services.login_codes,
        "preload": services.preload,
        "cores": services.cores,
        "library": services.library,
        "files": services.files,
        "changes": services.changes,
        "image_fetcher": services.images,  # not "images": Litestar would take a body field of that name for it
    }
    return {
        **{name: _constant(value) for name, value in named.items()},
        "access": Provide(_access, sync_to_thread=False),
    }


def _access(
    request: Request,
    registry: NamedDependency[ModelRegistry],
    limiter: NamedDependency[Limiter | None],
    image_fetcher: NamedDependency[ImageFetcher | None],
) -> ModelAccess:
    return ModelAccess(request, registry, limiter, image_fetcher)


@dataclass
class ModelAccess:
    """One request's way to a model. Called once its whole body is valid, so a bad request loads nothing and
    takes no place under its key's limits."""

    request: Request
    registry: ModelRegistry
    limiter: Limiter | None
    images: ImageFetcher | None = None  # images by URL, fetched before the model (:meth:`fetched`)

    async def fetched(self, gen: GenRequest) -> GenRequest:
        """``gen`` with its images by URL fetched (or refused, when the server fetches none): before any model."""
        return await fetch_images(gen, self.images)

    def spec(self, model: str, needs: str = "chat") -> ModelSpec | None:
        """The local model's spec (None for an upstream), once the key may use it and it serves ``needs``
        (chat, embedding or rerank): told from its GGUF header, before anything loads."""
        meter = meter_of(self.request)
        key = meter.key if meter is not None else None
        if key is not None and not key.allows(model):
            raise ModelNotFound(model)  # the same answer as for a model that does not exist
        spec = self.registry.entry(model).spec
        if not spec.local:
            return None
        if needs not in spec.capabilities:
            raise UnsupportedTask(model, spec.kind, needs)
        return spec

    async def run(
        self,
        model: str,
        keep_alive: float | None,
        work: Callable[[Any], Awaitable[T]],
        needs: str = "chat",
        relay: bool = True,
    ) -> T | Response[Any]:
        """Admit the request under its key's limits, then ``work`` on the model's engine (metered).

        A model that does not serve ``needs`` is refused first (see :meth:`spec`). An upstream id, or a local
        model that is full and names an ``overflow`` upstream, answers instead: then the upstream's answer is
        returned, to be relayed as it is. With ``relay`` False (a wire format upstreams do not speak), an upstream
        id is a 400 and a full model a 429.
        """
        if self.spec(model, needs) is None and not relay:
            raise InvalidRequest(f"`{model}` is an upstream model: it is served on /v1 only", param="model")
        self._admit()
        async with self._use(model, keep_alive) as engine:
            if isinstance(engine, UpstreamPool):
                return await self._relay(engine)
            try:
                return await work(engine)
            except Overloaded:
                overflow = self.registry.entry(model).spec.overflow
                if overflow is None or not relay:
                    raise
        async with self.registry.use(overflow) as pool:  # the key's scope is the local model's
            return await self._relay(pool)

    def _admit(self) -> None:
        meter = meter_of(self.request)
        if self.limiter is None or meter is None or meter.key is None:
            return
        try:
            meter.lease = self.limiter.admit(meter.key, self.request.scope["path"])
        except RateLimited as exc:
            meter.headers = exc.headers
            raise
        meter.headers = meter.lease.headers

    @contextlib.asynccontextmanager
    async def _use(self, model: str, keep_alive: float | None) -> AsyncIterator[Any]:
        """The model's engine (see :meth:`ModelRegistry.use`), metered; the key's scope is checked by :meth:`spec`."""
        meter = meter_of(self.request)
        async with self.registry.use(model, keep_alive) as engine:
            if meter is not None:
                meter.model = model
            # an upstream pool is handed out as it is: the relay charges the meter from the upstream's usage
            yield engine if meter is None or isinstance(engine, UpstreamPool) else MeteredEngine(engine, meter)

    async def _relay(self, pool: UpstreamPool) -> Response[Any]:
        body = await self.request.json()  # Litestar's decoding of the body, kept: not decoded again
        path = self.request.scope["path"].removeprefix("/v1")
        return await relay(pool, path, body if isinstance(body, dict) else {}, meter_of(self.request))
