"""Route handlers: thin, they hand off to :mod:`edge_run.api.chat` and the registry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath, JSONBody

from edge_run.api import chat, completions, internal, messages, responses
from edge_run.api.accounting import key_of, meter_of, use_model
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
from edge_run.api.schemas_messages import CountTokensRequest, MessageObject, MessagesRequest, TokenCountResult
from edge_run.api.schemas_responses import DeletedResponse, ResponseObject, ResponseRequest
from edge_run.api.sse import SSE_HEADERS, EventStream
from edge_run.errors import ClientDisconnected, ModelNotFound, Overloaded
from edge_run.models.registry import ModelEntry, ModelRegistry
from edge_run.upstream.pool import UpstreamPool
from edge_run.upstream.proxy import Forwarded, forward

__all__ = [
    "chat_completions",
    "count_message_tokens",
    "create_message",
    "create_response",
    "delete_response",
    "embeddings",
    "get_model",
    "get_response",
    "health",
    "list_models",
    "text_completions",
]

_STARTED = int(time.time())

T = TypeVar("T")


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


async def _admit(request: Request, model: str, keep_alive: float | None, start: Callable[[Any], Awaitable[T]]) -> T:
    """Start the request on its model. An upstream id, or a local model that is full and names an
    ``overflow`` upstream, is forwarded there instead: then the upstream's answer is raised as
    :class:`Forwarded` and relayed as is."""
    path = request.scope["path"].removeprefix("/v1")
    async with use_model(request, model, keep_alive) as engine:
        if isinstance(engine, UpstreamPool):
            raise Forwarded(await forward(engine, path, await _body(request), meter_of(request)))
        try:
            return await start(engine)
        except Overloaded:
            overflow = request.app.state.registry.entry(model).spec.overflow
            if overflow is None:
                raise
    async with request.app.state.registry.use(overflow) as pool:  # the key's scope is the local model's
        raise Forwarded(await forward(pool, path, await _body(request), meter_of(request)))


async def _body(request: Request) -> dict[str, Any]:
    body = msgspec.json.decode(await request.body())
    return body if isinstance(body, dict) else {}


@post("/chat/completions", status_code=200, summary="Create a chat completion (OpenAI-compatible)")
async def chat_completions(
    data: JSONBody[ChatCompletionRequest], request: Request
) -> ChatCompletion | EventStream:
    # the model is held until the answer is admitted; from then on the answer keeps it busy
    run = await _admit(request, data.model, data.keep_alive, lambda engine: chat.start(data, engine))
    return await _reply(request, data.stream, lambda: chat.stream(data, run), lambda: chat.complete(data, run))


@post("/completions", status_code=200, summary="Create a text completion (legacy, OpenAI-compatible)")
async def text_completions(
    data: JSONBody[CompletionRequest], request: Request
) -> Completion | EventStream:
    run = await _admit(request, data.model, data.keep_alive, lambda engine: completions.start(data, engine))
    return await _reply(
        request, data.stream, lambda: completions.stream(data, run), lambda: completions.complete(data, run)
    )


@post("/embeddings", status_code=200, summary="Create embeddings (mean-pooled, unit length)")
async def embeddings(data: JSONBody[EmbeddingRequest], request: Request) -> EmbeddingList:
    return await _admit(request, data.model, data.keep_alive, lambda engine: completions.embed(data, engine))


async def _reply(
    request: Request, streaming: bool, events: Callable[[], AsyncIterator[bytes]], whole: Callable[[], Awaitable[T]]
) -> T | EventStream:
    """Stream the answer's events, or wait for all of it (cancelled if the client leaves first)."""
    if streaming:
        return EventStream(events(), media_type="text/event-stream", headers=SSE_HEADERS)
    return await _unless_disconnected(request, whole())


@post("/responses", status_code=200, summary="Create a model response (OpenAI Responses API)")
async def create_response(
    data: JSONBody[ResponseRequest], state: State, request: Request
) -> ResponseObject | EventStream:
    # an unknown previous_response_id is refused before any model loads
    job = responses.prepare(data, state.responses, _owner(request))
    run = await _admit(request, data.model, data.keep_alive, lambda engine: internal.start(job.gen, engine))
    return await _reply(request, data.stream, lambda: responses.stream(job, run), lambda: responses.complete(job, run))


@get("/responses/{response_id:str}", summary="Get a stored response (only the key that made it sees it)")
async def get_response(response_id: FromPath[str], state: State, request: Request) -> ResponseObject:
    return state.responses.get(response_id, _owner(request)).response


@delete("/responses/{response_id:str}", status_code=200, summary="Delete a stored response")
async def delete_response(response_id: FromPath[str], state: State, request: Request) -> DeletedResponse:
    state.responses.delete(response_id, _owner(request))
    return DeletedResponse(id=response_id)


def _owner(request: Request) -> str | None:
    key = key_of(request)
    return key.sha256 if key is not None else None


@post("/messages", status_code=200, summary="Create a message (Anthropic Messages API)")
async def create_message(data: JSONBody[MessagesRequest], request: Request) -> MessageObject | EventStream:
    gen = messages.translate(data)
    run = await _admit(request, data.model, data.keep_alive, lambda engine: internal.start(gen, engine))
    return await _reply(request, data.stream, lambda: messages.stream(data, run), lambda: messages.complete(data, run))


@post("/messages/count_tokens", status_code=200, summary="Count a message's prompt tokens (Anthropic Messages API)")
async def count_message_tokens(data: JSONBody[CountTokensRequest], request: Request) -> TokenCountResult:
    gen = messages.conversation(data)
    tokens = await _admit(request, data.model, data.keep_alive, lambda engine: internal.count_tokens(gen, engine))
    return TokenCountResult(input_tokens=tokens)


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
