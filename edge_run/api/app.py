"""The Litestar application factory. No globals: everything the routes need is passed in."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig

from edge_run import __version__
from edge_run.api.accounting import accounting
from edge_run.api.errors import EXCEPTION_HANDLERS
from edge_run.api.guard import require_json, require_key
from edge_run.api.hosts import host_check
from edge_run.api.metrics import Metrics, metrics_route
from edge_run.api.response_store import ResponseStore
from edge_run.api.routes import (
    chat_completions,
    count_message_tokens,
    create_message,
    create_response,
    delete_response,
    embeddings,
    get_model,
    get_response,
    health,
    list_models,
    text_completions,
)
from edge_run.api.usage import usage as usage_route
from edge_run.api.web import LoginCodes, web_routes
from edge_run.keys.limits import Limiter
from edge_run.keys.usage import UsageLog

if TYPE_CHECKING:
    from edge_run.api.access_log import AccessLog
    from edge_run.engine import CoreShare
    from edge_run.keys import KeyStore
    from edge_run.models.registry import ModelRegistry

__all__ = ["create_app"]


def create_app(
    registry: ModelRegistry,
    keys: KeyStore | None,
    *,
    preload: Iterable[str] = (),
    cores: CoreShare | None = None,
    max_body_bytes: int = 8 << 20,
    login_code: str | None = None,
    allowed_hosts: Iterable[str] = (),
    cors_origins: Iterable[str] = (),
    metrics_public: bool = False,
    access_log: AccessLog | None = None,
) -> Litestar:
    """Build the app. ``keys=None`` turns auth off (the CLI allows that on loopback only).

    ``preload`` names the models loaded at start-up; ``/health`` answers 503 until they are.
    ``cores`` is the CPU budget the models share, reported by ``/health``.
    ``login_code`` is a one-time code the web page can trade for an API key (see :mod:`.web`).
    ``allowed_hosts`` are names, besides addresses and ``localhost``, that a ``Host`` header may carry.
    ``cors_origins`` are the web origins whose pages may call the API from a browser (``*``: any).
    ``metrics_public`` serves ``/metrics`` without a key; ``access_log`` gets a line per request.
    Setting ``app.state.draining`` (on SIGTERM) answers new requests ``503`` while running ones finish.
    """
    origins = list(cors_origins)
    usage = UsageLog(keys) if keys is not None else None
    limiter = Limiter(usage) if usage is not None else None
    login_codes = LoginCodes()
    if login_code:
        login_codes.add(login_code)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await registry.start()
        if usage is not None:
            await usage.start()
        # load in the background so /health answers "loading" at once instead of the port staying shut
        app.state.preloading = asyncio.create_task(registry.preload(list(preload)))
        try:
            yield
        finally:
            app.state.preloading.cancel()
            await asyncio.gather(app.state.preloading, return_exceptions=True)
            await registry.close()
            if usage is not None:
                await usage.close()
            if access_log is not None:
                access_log.close()

    v1 = Router(
        path="/v1",
        guards=[require_key, require_json],
        route_handlers=[
            chat_completions,
            text_completions,
            embeddings,
            list_models,
            get_model,
            usage_route,
            create_response,
            get_response,
            delete_response,
            create_message,
            count_message_tokens,
        ],
    )
    metrics = Router(path="/", guards=[] if metrics_public else [require_key], route_handlers=[metrics_route])
    return Litestar(
        route_handlers=[health, v1, metrics, *web_routes()],
        state=State(
            {
                "registry": registry,
                "cores": cores,
                "key_store": keys,
                "limiter": limiter,
                "usage": usage,
                "metrics": Metrics(registry),
                "access_log": access_log,
                "draining": False,
                "login_codes": login_codes,
                "responses": ResponseStore(),  # stored responses: 1000 at most, each for an hour
            }
        ),
        lifespan=[lifespan],
        middleware=[host_check(allowed_hosts), accounting],
        cors_config=CORSConfig(allow_origins=origins, allow_methods=["*"], allow_headers=["*"]) if origins else None,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=max_body_bytes,
        openapi_config=OpenAPIConfig(title="edge-run", version=__version__, path="/openapi"),
    )
