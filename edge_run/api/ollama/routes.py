"""Ollama's generating routes: ``/api/chat``, ``/api/generate``, ``/api/embed`` and ``/api/embeddings``.

Each checks its whole body first (the wire request, then the internal request), and only then takes its model
through :class:`~edge_run.api.deps.ModelAccess`, as OpenAI's routes do: limits, usage, metrics and the access log
apply unchanged. Upstream models speak OpenAI's API only, so they are refused here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from litestar import Request, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody

from edge_run.api.deps import ModelAccess
from edge_run.api.http.sse import answer
from edge_run.api.ollama.schemas import (
    ChatRequest,
    ChatResponse,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbedRequest,
    EmbedResponse,
    GenerateRequest,
    GenerateResponse,
    OutMessage,
)
from edge_run.api.ollama.stream import NDJSON, Reply, created_at, nanoseconds
from edge_run.api.ollama.translate import check_context, keep_alive_seconds, translate_chat, translate_generate
from edge_run.serving.prompt import check, start
from edge_run.serving.retrieval import check_dimensions, embedding_inputs, shortened

if TYPE_CHECKING:
    from edge_run.api.ollama.schemas import KeepAlive
    from edge_run.serving.assembly import Run
    from edge_run.serving.request import GenRequest

__all__ = ["chat", "embed", "embeddings", "generate"]

_Answer = ChatResponse | GenerateResponse | Response[Any]


async def _idle(engine: object) -> None:
    return None


async def _load_only(access: ModelAccess, model: str, keep_alive: float | None, chat: bool) -> _Answer:
    """Nothing to generate: load the model, or with ``keep_alive: 0`` let it unload (Ollama's load and unload)."""
    entry = access.registry.entry(model)
    unload = keep_alive == 0
    if not (unload and entry.status != "loaded"):  # an unloaded model is not loaded only to unload it
        await access.run(model, keep_alive, _idle, relay=False)
    fields: dict[str, Any] = {"model": model, "created_at": created_at(), "done": True}
    fields["done_reason"] = "unload" if unload else "load"
    if chat:
        return ChatResponse(**fields, message=OutMessage(role="assistant", content=""))
    return GenerateResponse(**fields, response="")


async def _generate(
    request: Request, access: ModelAccess, data: ChatRequest | GenerateRequest, gen: GenRequest, empty: bool
) -> _Answer:
    started = nanoseconds()
    spec = access.spec(data.model)
    check_context(data.options, spec)
    keep_alive = keep_alive_seconds(data.keep_alive)
    chat = isinstance(data, ChatRequest)
    if empty:
        return await _load_only(access, data.model, keep_alive, chat)
    check(gen)
    gen = await access.fetched(gen)
    # the model is held until the answer is admitted; from then on the answer keeps it busy
    run = cast("Run", await access.run(data.model, keep_alive, lambda engine: start(gen, engine), relay=False))
    reply = Reply(data.model, run, chat=chat, started=started, held=nanoseconds())
    return await answer(request, run, data.stream, lambda: reply, reply.whole, media_type=NDJSON)


@post("/chat", status_code=200, summary="Chat (Ollama's API): NDJSON lines, or one object with `stream: false`")
async def chat(data: JSONBody[ChatRequest], request: Request, access: NamedDependency[ModelAccess]) -> ChatResponse:
    gen = translate_chat(data)
    # the stream is a Response that Litestar sends as it is: the schema documents the whole answer
    return cast("ChatResponse", await _generate(request, access, data, gen, empty=not data.messages))


@post("/generate", status_code=200, summary="Generate from a prompt (Ollama's API): NDJSON lines, or one object")
async def generate(
    data: JSONBody[GenerateRequest], request: Request, access: NamedDependency[ModelAccess]
) -> GenerateResponse:
    gen = translate_generate(data)
    return cast("GenerateResponse", await _generate(request, access, data, gen, empty=not data.prompt))


async def _vectors(
    access: ModelAccess, model: str, raw: str | list[str], keep_alive: KeepAlive | None, truncate: bool
) -> tuple[list[Any], int, int]:
    """Unit vectors for the texts, the tokens they took, and the nanoseconds until the model held the request."""
    started = nanoseconds()
    spec = access.spec(model, "embedding")
    inputs = embedding_inputs(raw, None, spec)
    held: list[int] = []

    async def work(engine: Any) -> tuple[list[Any], int]:
        held.append(nanoseconds())
        return cast("tuple[list[Any], int]", await engine.embed(inputs, truncate=truncate))

    vectors, tokens = cast(
        "tuple[list[Any], int]",
        await access.run(model, keep_alive_seconds(keep_alive), work, needs="embedding", relay=False),
    )
    return vectors, tokens, held[0] - started


@post("/embed", status_code=200, summary="Embed texts (Ollama's API): unit-length vectors")
async def embed(data: JSONBody[EmbedRequest], access: NamedDependency[ModelAccess]) -> EmbedResponse:
    started = nanoseconds()
    check_dimensions(data.dimensions, access.spec(data.model, "embedding"))
    vectors, tokens, load = await _vectors(access, data.model, data.input, data.keep_alive, data.truncate)
    return EmbedResponse(
        model=data.model,
        embeddings=[shortened(v, data.dimensions).tolist() for v in vectors],
        total_duration=nanoseconds() - started,
        load_duration=load,
        prompt_eval_count=tokens,
    )


@post("/embeddings", status_code=200, summary="Embed one text (Ollama's older route)")
async def embeddings(data: JSONBody[EmbeddingsRequest], access: NamedDependency[ModelAccess]) -> EmbeddingsResponse:
    [vector], _, _ = await _vectors(access, data.model, data.prompt, data.keep_alive, truncate=True)
    return EmbeddingsResponse(embedding=vector.tolist())
