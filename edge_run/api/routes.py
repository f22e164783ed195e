"""Route handlers: thin, they hand off to :mod:`edge_run.api.chat` and the registry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody
from litestar.response import Stream
from litestar.response.base import ASGIResponse

from edge_run.api import chat, completions
from edge_run.api.accounting import key_of, use_model
from edge_run.api.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    EmbeddingList,
    EmbeddingRequest,
    ModelCard,
    ModelList,
)
from edge_run.errors import ClientDisconnected, ModelNotFound
from edge_run.models.registry import ModelEntry, ModelRegistry

__all__ = ["chat_completions", "embeddings", "get_model", "health", "list_models", "text_completions"]

_STARTED = int(time.time())
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

T = TypeVar("T")


class EventStream(Stream):
    """A ``Stream`` whose own media type wins: Litestar's ``Stream`` lets the handler's (JSON) override it."""

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        kwargs["media_type"] = self.media_type
        return super().to_asgi_response(*args, **kwargs)


async def _disconnect(request: Request) -> None:
    # the body is already read: the next ASGI message is http.disconnect when the client leaves
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await a whole (non-streaming) answer; if the client leaves first, cancel it so its slots free up.

    Streams need no watch: their next write fails and closes the generation.
    """
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled():
        raise ClientDisconnected("The client disconnected before the answer was ready.")
    return task.result()


@post("/chat/completions", status_code=200, summary="Create a chat completion (OpenAI-compatible)")
async def chat_completions(
    data: JSONBody[ChatCompletionRequest], state: State, request: Request
) -> ChatCompletion | EventStream:
    # the model is held until the answer is admitted; from then on the answer keeps it busy
    async with use_model(request, data.model, data.keep_alive) as engine:
        run = await chat.start(data, engine)
    if data.stream:
        return EventStream(chat.stream(data, run), media_type="text/event-stream", headers=_SSE_HEADERS)
    return await _unless_disconnected(request, chat.complete(data, run))


@post("/completions", status_code=200, summary="Create a text completion (legacy, OpenAI-compatible)")
async def text_completions(
    data: JSONBody[CompletionRequest], state: State, request: Request
) -> Completion | EventStream:
    async with use_model(request, data.model, data.keep_alive) as engine:
        started = await completions.start(data, engine)
    if data.stream:
        return EventStream(completions.stream(data, started), media_type="text/event-stream", headers=_SSE_HEADERS)
    return await _unless_disconnected(request, completions.complete(data, started))


@post("/embeddings", status_code=200, summary="Create embeddings (mean-pooled, unit length)")
async def embeddings(data: JSONBody[EmbeddingRequest], request: Request) -> EmbeddingList:
    async with use_model(request, data.model, data.keep_alive) as engine:
        return await completions.embed(data, engine)


def _card(registry: ModelRegistry, entry: ModelEntry) -> ModelCard:
    expires = registry.expires_in(entry)
    return ModelCard(
        id=entry.spec.id,
        created=_STARTED,
        status=entry.status,
        error=entry.error if entry.status == "failed" else None,
        expires_in=None if expires is None else round(expires, 1),
    )


@get("/models", summary="List the models this key may use, with `status` (loaded, loading...)")
async def list_models(state: State, request: Request) -> ModelList:
    key = key_of(request)
    return ModelList(data=[_card(state.registry, e) for e in state.registry if key is None or key.allows(e.spec.id)])


@get("/models/{model_id:path}", summary="Describe one model (ids may contain `/`)")
async def get_model(model_id: FromPath[str], state: State, request: Request) -> ModelCard:
    model_id = model_id.lstrip("/")
    key = key_of(request)
    if key is not None and not key.allows(model_id):
        raise ModelNotFound(model_id)
    return _card(state.registry, state.registry.entry(model_id))


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
async def health(state: State) -> Response[dict[str, Any]]:
    """``200`` once the models named at start-up are loaded (``503`` while they load)."""
    registry: ModelRegistry = state.registry
    loading = not state.preloading.done()
    body = {
        "status": "loading" if loading else "ok",
        "models_loaded": sum(e.status == "loaded" for e in registry),
        "max_loaded": registry.max_loaded,
        "memory_budget_bytes": registry.budget,
        "cores": state.cores.cores if state.cores else None,
        "threads_peak": state.cores.peak if state.cores else None,  # never above cores
        "models": [_model_health(registry, e) for e in registry],
    }
    return Response(body, status_code=503 if loading else 200)
