"""OpenAI's routes: chat completions, completions, embeddings and models; and edge-run's ``/v1/usage``.

Each generating route checks its whole body first (the wire request, then the internal request), and
only then takes its model through :class:`~edge_run.api.deps.ModelAccess`: a bad request loads nothing.
"""

from __future__ import annotations

import time
from typing import Any, Literal, cast

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from edge_run.api.deps import ModelAccess
from edge_run.api.http.accounting import key_of
from edge_run.api.http.sse import answer
from edge_run.api.openai import chat, completions
from edge_run.api.openai.embeddings import embed
from edge_run.api.openai.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    EmbeddingList,
    EmbeddingRequest,
    ModelCard,
    ModelList,
    UsageReport,
)
from edge_run.errors import InvalidRequest, ModelNotFound
from edge_run.keys.usage import UsageLog, since_seconds
from edge_run.models.registry import ModelEntry, ModelRegistry
from edge_run.serving.prompt import check, start
from edge_run.serving.retrieval import check_dimensions, embedding_inputs

__all__ = ["chat_completions", "embeddings", "get_model", "list_models", "model_card", "text_completions", "usage"]

_STARTED = int(time.time())


@post("/chat/completions", status_code=200, summary="Create a chat completion (OpenAI-compatible)")
async def chat_completions(
    data: JSONBody[ChatCompletionRequest], request: Request, access: NamedDependency[ModelAccess]
) -> ChatCompletion | Response[Any]:  # or a stream of chunks
    gen = chat.translate(data)
    check(gen)
    gen = await access.fetched(gen)
    # the model is held until the answer is admitted; from then on the answer keeps it busy
    run = await access.run(data.model, data.keep_alive, lambda engine: start(gen, engine))
    if isinstance(run, Response):
        return run  # an upstream's answer, relayed
    return await answer(request, run, data.stream, lambda: chat.ChatFrames(data, run), lambda: chat.complete(data, run))


@post("/completions", status_code=200, summary="Create a text completion (legacy, OpenAI-compatible)")
async def text_completions(
    data: JSONBody[CompletionRequest], request: Request, access: NamedDependency[ModelAccess]
) -> Completion | Response[Any]:  # or a stream of chunks
    gen = completions.translate(data)
    check(gen)
    run = await access.run(data.model, data.keep_alive, lambda engine: start(gen, engine))
    if isinstance(run, Response):
        return run
    return await answer(
        request,
        run,
        data.stream,
        lambda: completions.CompletionFrames(data, run),
        lambda: completions.complete(data, run),
    )


@post("/embeddings", status_code=200, summary="Create embeddings (unit length, pooled as the model pools)")
async def embeddings(data: JSONBody[EmbeddingRequest], access: NamedDependency[ModelAccess]) -> EmbeddingList:
    spec = access.spec(data.model, "embedding")
    inputs = embedding_inputs(data.input, data.input_type, spec)
    check_dimensions(data.dimensions, spec)
    # an upstream's answer is a Response, which Litestar sends as it is: the schema documents the local one
    result = await access.run(data.model, data.keep_alive, lambda e: embed(data, inputs, e), needs="embedding")
    return cast("EmbeddingList", result)


def model_card(registry: ModelRegistry, entry: ModelEntry) -> ModelCard:
    """A model as ``/v1/models`` lists it: its status, and what it serves."""
    expires = registry.expires_in(entry)
    return ModelCard(
        id=entry.spec.id,
        created=_STARTED,
        status=entry.status,
        error=entry.error if entry.status == "failed" else None,
        expires_in=None if expires is None else round(expires, 1),
        capabilities=list(entry.spec.capabilities) if entry.spec.local else [],  # type: ignore[arg-type]
        inputs=list(entry.spec.inputs) if entry.spec.local and entry.spec.kind == "chat" else [],  # type: ignore[arg-type]
    )


@get("/models", summary="List the models this key may use, with `status` (loaded, loading...)")
async def list_models(registry: NamedDependency[ModelRegistry], request: Request) -> ModelList:
    key = key_of(request)
    return ModelList(data=[model_card(registry, e) for e in registry if key is None or key.allows(e.spec.id)])


@get("/models/{model_id:path}", summary="Describe one model (ids may contain `/`)")
async def get_model(model_id: FromPath[str], registry: NamedDependency[ModelRegistry], request: Request) -> ModelCard:
    model_id = model_id.lstrip("/")
    key = key_of(request)
    if key is not None and not key.allows(model_id):
        raise ModelNotFound(model_id)
    return model_card(registry, registry.entry(model_id))


@get("/usage", summary="Token usage per day, model or key (an admin key sees every key, others their own)")
async def usage(
    usage_log: NamedDependency[UsageLog | None],
    request: Request,
    since: FromQuery[str] = "7d",
    by: FromQuery[Literal["day", "model", "key"]] = "day",
) -> UsageReport:
    try:
        start_at = since_seconds(since)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="since") from None
    key = key_of(request)
    only = None if key is None or key.admin else key.name
    rows = [] if usage_log is None else usage_log.totals(since=start_at, by=by, key=only, split_keys=True)
    return UsageReport(since=start_at, by=by, scope="this key" if only else "all keys", data=rows)
