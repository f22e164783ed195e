"""The Litestar application factory. No globals: everything the routes need is passed in."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.openapi import OpenAPIConfig

from edge_run import __version__
from edge_run.api.errors import EXCEPTION_HANDLERS
from edge_run.api.guard import require_key
from edge_run.api.routes import chat_completions, embeddings, get_model, health, list_models, text_completions

if TYPE_CHECKING:
    from edge_run.engine.registry import Registry
    from edge_run.keys import KeyStore

__all__ = ["create_app"]


def create_app(registry: Registry, keys: KeyStore | None, *, max_body_bytes: int = 8 << 20) -> Litestar:
    """Build the app. ``keys=None`` turns auth off (the CLI allows that on loopback only)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        # load in the background so /health answers "loading" at once instead of the port staying shut
        loading = [asyncio.create_task(engine.load()) for engine in registry]
        try:
            yield
        finally:
            for task in loading:
                task.cancel()
            await asyncio.gather(*loading, return_exceptions=True)
            for engine in registry:
                await engine.close()

    v1 = Router(
        path="/v1",
        guards=[require_key],
        route_handlers=[chat_completions, text_completions, embeddings, list_models, get_model],
    )
    return Litestar(
        route_handlers=[health, v1],
        state=State({"registry": registry, "key_store": keys}),
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        request_max_body_size=max_body_bytes,
        openapi_config=OpenAPIConfig(title="edge-run", version=__version__, path="/openapi"),
    )
