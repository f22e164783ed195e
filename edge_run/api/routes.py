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
from edge_run.engine.registry import Registry
from edge_run.errors import ClientDisconnected

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
    engine = state.registry.get(data.model)
    run = await chat.start(data, engine)
    if data.stream:
        return EventStream(
            chat.stream(data, run),
            media_type="text/event-stream",
            headers=_SSE_HEADERS,
        )
    return await _unless_disconnected(request, chat.complete(data, run))


@post("/completions", status_code=200, summary="Create a text completion (legacy, OpenAI-compatible)")
async def text_completions(
    data: JSONBody[CompletionRequest], state: State, request: Request
) -> Completion | EventStream:
    started = await completions.start(data, state.registry.get(data.model))
    if data.stream:
        return EventStream(completions.stream(data, started), media_type="text/event-stream", headers=_SSE_HEADERS)
    return await _unless_disconnected(request, completions.complete(data, started))


@post("/embeddings", status_code=200, summary="Create embeddings (mean-pooled, unit length)")
async def embeddings(data: JSONBody[EmbeddingRequest], state: State) -> EmbeddingList:
    return await completions.embed(data, state.registry.get(data.model))


def _card(model_id: str) -> ModelCard:
    return ModelCard(id=model_id, created=_STARTED)


@get("/models", summary="List the served models")
async def list_models(state: State) -> ModelList:
    registry: Registry = state.registry
    return ModelList(data=[_card(e.model_id) for e in registry])


@get("/models/{model_id:path}", summary="Describe one served model (ids may contain `/`)")
async def get_model(model_id: FromPath[str], state: State) -> ModelCard:
    engine = state.registry.get(model_id.lstrip("/"))
    return _card(engine.model_id)


@get("/health", summary="Liveness and model state; needs no key", exclude_from_auth=True)
async def health(state: State) -> Response[dict[str, Any]]:
    models = [e.status() for e in state.registry]
    ready = all(m["state"] == "ready" for m in models)
    failed = any(m["state"] == "failed" for m in models)
    status = "ok" if ready else ("error" if failed else "loading")
    return Response({"status": status, "models": models}, status_code=200 if ready else 503)
