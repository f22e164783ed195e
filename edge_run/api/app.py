"""The Litestar application factory. No globals: every long-lived object comes in :class:`Services`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING

from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig

from edge_run import __version__
from edge_run.api.anthropic.routes import count_message_tokens, create_message
from edge_run.api.deps import dependencies
from edge_run.api.http.accounting import accounting
from edge_run.api.http.auth import require_json, require_key
from edge_run.api.http.errors import EXCEPTION_HANDLERS
from edge_run.api.http.health import health
from edge_run.api.http.hosts import host_check
from edge_run.api.http.metrics import metrics_route
from edge_run.api.library.models import delete_model, load_or_unload
from edge_run.api.library.pulls import cancel_pull, list_pulls, start_pull
from edge_run.api.library.routes import list_library
from edge_run.api.ollama import models as ollama_models
from edge_run.api.ollama import routes as ollama_routes
from edge_run.api.openai.audio import transcriptions
from edge_run.api.openai.routes import chat_completions, embeddings, get_model, list_models, text_completions, usage
from edge_run.api.rerank.routes import ollama_rerank, rerank, rerank_unversioned
from edge_run.api.responses.routes import create_response, delete_response, get_response
from edge_run.api.web.routes import web_routes

if TYPE_CHECKING:
    from edge_run.api.deps import Services

__all__ = ["create_app"]

_V1_ROUTES = (
    chat_completions,
    text_completions,
    embeddings,
    list_models,
    get_model,
    list_library,
    list_pulls,
    start_pull,
    cancel_pull,
    load_or_unload,
    delete_model,
    usage,
    create_response,
    get_response,
    delete_response,
    create_message,
    count_message_tokens,
)

_OLLAMA_ROUTES = (
    ollama_routes.chat,
    ollama_routes.generate,
    ollama_routes.embed,
    ollama_routes.embeddings,
    ollama_models.list_tags,
    ollama_models.show_model,
    ollama_models.list_running,
    ollama_models.pull_model,
    ollama_models.delete_model,
    ollama_models.copy_model,
    ollama_models.version,
    ollama_rerank,
)


def create_app(
    services: Services,
    *,
    max_body_bytes: int = 32 << 20,
    allowed_hosts: Iterable[str] = (),
    cors_origins: Iterable[str] = (),
    metrics_public: bool = False,
    ollama_no_key: bool = False,
) -> Litestar:
    """Build the app on ``services`` (see ``server.app_services``); ``services.keys=None`` turns auth off.

    ``allowed_hosts`` are names, besides addresses and ``localhost``, that a ``Host`` header may carry.
    ``cors_origins`` are the web origins whose pages may call the API from a browser (``*``: any).
    ``metrics_public`` serves ``/metrics`` without a key; ``ollama_no_key`` serves Ollama's ``/api/*`` without
    one (a key sent is still checked; the CLI allows it on loopback only). Setting ``app.state.draining`` (on SIGTERM)
    answers new requests ``503`` while running ones finish.
    """
    origins = list(cors_origins)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        await services.registry.start()
        if services.usage is not None:
            await services.usage.start()
        services.preload.start()
        try:
            yield
        finally:
            await services.preload.stop()
            await services.registry.close()
            if services.usage is not None:
                await services.usage.close()
            if services.access_log is not None:
                services.access_log.close()

    key_guard = require_key(services.keys)
    v1 = Router(path="/v1", guards=[key_guard, require_json], route_handlers=list(_V1_ROUTES))
    both = Router(path="/", guards=[key_guard, require_json], route_handlers=[rerank, rerank_unversioned])
    forms = Router(path="/v1", guards=[key_guard], route_handlers=[transcriptions])  # OpenAI's multipart form
    metrics = Router(path="/", guards=[] if metrics_public else [key_guard], route_handlers=[metrics_route])
    ollama_guard = require_key(services.keys, optional=ollama_no_key)
    # Ollama's clients (and its docs' curl lines) post JSON under other content types; a key in a header already
    # rules out a cross-site form, so the JSON-only check stays only where a request may come without one
    open_api = services.keys is None or ollama_no_key
    ollama = Router(
        path="/api", guards=[ollama_guard, *([require_json] if open_api else [])], route_handlers=list(_OLLAMA_ROUTES)
    )
    return Litestar(
        route_handlers=[health, v1, both, forms, metrics, ollama, *web_routes()],
        dependencies=dependencies(services),
        state=State({"draining": False}),
        lifespan=[lifespan],
        middleware=[host_check(allowed_hosts), accounting(services.metrics, services.access_log)],
        cors_config=CORSConfig(allow_origins=origins, allow_methods=["*"], allow_headers=["*"]) if origins else None,
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=max_body_bytes,
        openapi_config=OpenAPIConfig(title="edge-run", version=__version__, path="/openapi"),
    )
