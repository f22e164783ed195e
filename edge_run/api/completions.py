"""``POST /v1/completions`` (legacy text completion) and ``POST /v1/embeddings``."""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import AsyncIterator

import numpy as np

from edge_run.api.chat import sampling_spec, sse, stop_list
from edge_run.api.errors import error_body
from edge_run.api.schemas import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    Embedding,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    Usage,
)
from edge_run.engine.engine import Engine, Generation
from edge_run.engine.scheduler import Chunk
from edge_run.engine.scheduler import TokenLogprob as EngineLogprob
from edge_run.errors import EdgeRunError, InvalidRequest

__all__ = ["Started", "complete", "embed", "start", "stream"]


Started = list[tuple[str, int, Generation]]  # (prompt text, prompt tokens, generation) per prompt


async def start(req: CompletionRequest, engine: Engine) -> Started:
    if req.suffix:
        raise InvalidRequest("`suffix` (fill-in-the-middle) is not supported", param="suffix")
    if req.best_of not in (None, req.n):
        raise InvalidRequest("`best_of` other than `n` is not supported", param="best_of")
    if req.echo and req.logprobs is not None:
        raise InvalidRequest("`echo` with `logprobs` (prompt logprobs) is not supported", param="logprobs")
    prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
    stops = stop_list(req.stop)
    spec = sampling_spec(req, engine, None)
    started: Started = []
    try:
        for text in prompts:
            tokens = await engine.tokenize(text)
            if not tokens:
                raise InvalidRequest("`prompt` is empty", param="prompt")
            gen = await engine.generate(
                tokens, spec, max_tokens=req.max_tokens, stops=stops, n=req.n, top_logprobs=req.logprobs
            )
            started.append((text, len(tokens), gen))
    except BaseException:
        for _, _, gen in started:
            gen.cancel()
        raise
    return started


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


async def complete(req: CompletionRequest, started: Started) -> Completion:
    choices: list[CompletionChoice] = []
    prompt_tokens = completion_tokens = 0
    for p, (prompt, n_prompt, gen) in enumerate(started):
        texts: list[list[str]] = [[] for _ in range(req.n)]
        lps: list[list[EngineLogprob]] = [[] for _ in range(req.n)]
        last = [Chunk() for _ in range(req.n)]
        async for chunk in gen:
            texts[chunk.index].append(chunk.text)
            lps[chunk.index] += chunk.logprobs or []
            last[chunk.index] = chunk
        prompt_tokens += n_prompt
        completion_tokens += sum(c.completion_tokens for c in last)
        head = prompt if req.echo else ""
        for i in range(req.n):
            choices.append(
                CompletionChoice(
                    index=p * req.n + i,
                    text=head + "".join(texts[i]),
                    finish_reason=last[i].finish_reason or "stop",
                    logprobs=_logprobs(lps[i], len(head)) if req.logprobs is not None else None,
                )
            )
    return Completion(
        id=_new_id(),
        created=int(time.time()),
        model=req.model,
        choices=choices,
        usage=Usage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens),
    )


async def stream(req: CompletionRequest, started: Started) -> AsyncIterator[bytes]:
    cid, created = _new_id(), int(time.time())

    def frame(choices: list[CompletionChoice], usage: Usage | None = None) -> bytes:
        body = Completion(id=cid, created=created, model=req.model, choices=choices, usage=usage)
        return sse(body)

    prompt_tokens = completion_tokens = 0
    try:
        for p, (prompt, n_prompt, gen) in enumerate(started):
            prompt_tokens += n_prompt
            done: dict[int, int] = {}
            if req.echo:
                yield b"".join(frame([CompletionChoice(p * req.n + i, prompt, None)]) for i in range(req.n))
            async for ready in gen.batches():  # whatever is ready goes out in one write
                frames = []
                for chunk in ready:
                    lp = _logprobs(chunk.logprobs or [], 0) if req.logprobs is not None else None
                    choice = CompletionChoice(p * req.n + chunk.index, chunk.text, chunk.finish_reason, lp)
                    frames.append(frame([choice]))
                    done[chunk.index] = chunk.completion_tokens
                yield b"".join(frames)
            completion_tokens += sum(done.values())
        usage = b""
        if req.stream_options is not None and req.stream_options.include_usage:
            usage = frame([], Usage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens))
        yield usage + b"data: [DONE]\n\n"
    except EdgeRunError as exc:
        yield sse(error_body(exc))
    finally:
        for _, _, gen in started:
            gen.cancel()


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
