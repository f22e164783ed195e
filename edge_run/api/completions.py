"""``POST /v1/completions`` (legacy text completion) and ``POST /v1/embeddings``."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import numpy as np

from edge_run.api import internal
from edge_run.api.assembly import Run, collect, sse
from edge_run.api.chat import stop_list, usage
from edge_run.api.errors import error_body
from edge_run.api.internal import GenRequest
from edge_run.api.schemas import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
)
from edge_run.errors import EdgeRunError, InvalidRequest

if TYPE_CHECKING:
    from edge_run.engine import Engine
    from edge_run.engine import TokenLogprob as EngineLogprob

__all__ = ["complete", "embed", "start", "stream", "translate"]


def _prompts(req: CompletionRequest) -> list[str]:
    return [req.prompt] if isinstance(req.prompt, str) else req.prompt


def translate(req: CompletionRequest) -> GenRequest:
    if req.suffix:
        raise InvalidRequest("`suffix` (fill-in-the-middle) is not supported", param="suffix")
    if req.best_of not in (None, req.n):
        raise InvalidRequest("`best_of` other than `n` is not supported", param="best_of")
    if req.echo and req.logprobs is not None:
        raise InvalidRequest("`echo` with `logprobs` (prompt logprobs) is not supported", param="logprobs")
    return GenRequest(
        model=req.model,
        sampling=req,
        prompts=_prompts(req),
        max_tokens=req.max_tokens,
        stops=stop_list(req.stop),
        n=req.n,
        top_logprobs=req.logprobs,
    )


async def start(req: CompletionRequest, engine: Engine) -> Run:
    return await internal.start(translate(req), engine)


def _logprobs(items: list[EngineLogprob], offset: int) -> CompletionLogprobs:
    tokens, values, tops, offsets = [], [], [], []
    for item in items:
        token = item.token.decode("utf-8", "replace")
        tokens.append(token)
        values.append(item.logprob)
        tops.append({b.decode("utf-8", "replace"): lp for b, lp in item.top})
        offsets.append(offset)
        offset += len(token)
    return CompletionLogprobs(tokens=tokens, token_logprobs=values, top_logprobs=tops, text_offset=offsets)


def _new_id() -> str:
    return "cmpl-" + secrets.token_hex(12)


async def complete(req: CompletionRequest, run: Run) -> Completion:
    prompts = _prompts(req)
    choices: list[CompletionChoice] = []
    for i, choice in enumerate(await collect(run)):
        head = prompts[i // req.n] if req.echo else ""
        choices.append(
            CompletionChoice(
                index=i,
                text=head + choice.text,
                finish_reason=choice.finish_reason or "stop",
                logprobs=_logprobs(choice.logprobs, len(head)) if req.logprobs is not None else None,
            )
        )
    return Completion(id=_new_id(), created=int(time.time()), model=req.model, choices=choices, usage=usage(run.totals))


async def stream(req: CompletionRequest, run: Run) -> AsyncIterator[bytes]:
    cid, created = _new_id(), int(time.time())
    prompts = _prompts(req)
    echoed: set[int] = set()

    def frame(choice: CompletionChoice | None = None) -> bytes:
        totals = None if choice is not None else usage(run.totals)
        body = Completion(id=cid, created=created, model=req.model, choices=[choice] if choice else [], usage=totals)
        return sse(body)

    try:
        async for ready in run.pieces():  # whatever is ready goes out in one write
            frames = []
            for piece in ready:
                if req.echo and piece.choice not in echoed:  # the prompt first, in a frame of its own
                    echoed.add(piece.choice)
                    frames.append(frame(CompletionChoice(piece.choice, prompts[piece.choice // req.n], None)))
                lp = _logprobs(piece.logprobs or [], 0) if req.logprobs is not None else None
                frames.append(frame(CompletionChoice(piece.choice, piece.text, piece.finish_reason, lp)))
            yield b"".join(frames)
        tail = frame() if req.stream_options is not None and req.stream_options.include_usage else b""
        yield tail + b"data: [DONE]\n\n"
    except EdgeRunError as exc:
        yield sse(error_body(exc))
    finally:
        run.cancel()


async def embed(req: EmbeddingRequest, engine: Engine) -> EmbeddingList:
    if req.dimensions is not None:
        raise InvalidRequest("`dimensions` is not supported: vectors keep the model's size", param="dimensions")
    texts = [req.input] if isinstance(req.input, str) else req.input
    vectors, n_tokens = await engine.embed(texts)
    data = [
        Embedding(
            index=i,
            embedding=base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
            if req.encoding_format == "base64"
            else v,
        )
        for i, v in enumerate(vectors)
    ]
    return EmbeddingList(data=data, model=req.model, usage=EmbeddingUsage(n_tokens, n_tokens))
