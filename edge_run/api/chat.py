"""``POST /v1/chat/completions``: request Struct to engine call, token stream to JSON or SSE."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from edge_run.api.errors import error_body
from edge_run.api.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    Delta,
    ImagePart,
    PromptTokensDetails,
    Usage,
)
from edge_run.engine.engine import Engine, Generation
from edge_run.engine.llama import SamplerSpec
from edge_run.engine.scheduler import Chunk
from edge_run.errors import EdgeRunError, InvalidRequest

__all__ = ["complete", "start", "stream"]

_encode = msgspec.json.Encoder().encode


def _unsupported(req: ChatCompletionRequest) -> str | None:
    """Parameters accepted by OpenAI that this server cannot honour yet: refused, never ignored."""
    if req.n != 1:
        return "n"
    if req.tools and req.tool_choice != "none":
        return "tools"
    if req.response_format and req.response_format.get("type") not in (None, "text"):
        return "response_format"
    if req.logprobs:
        return "logprobs"
    return None


def template_messages(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    """Messages as chat templates expect them: ``content`` a plain string."""
    out: list[dict[str, Any]] = []
    for i, m in enumerate(req.messages):
        if isinstance(m.content, list):
            parts = []
            for j, part in enumerate(m.content):
                if isinstance(part, ImagePart):
                    raise InvalidRequest(
                        "image inputs are not supported by this model", param=f"messages[{i}].content[{j}]"
                    )
                parts.append(part.text)
            content: str | None = "\n".join(parts)
        else:
            content = m.content
        msg: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": content}
        if m.name is not None:
            msg["name"] = m.name
        if m.tool_calls:
            msg["tool_calls"] = msgspec.to_builtins(m.tool_calls)
        if m.tool_call_id is not None:
            msg["tool_call_id"] = m.tool_call_id
        out.append(msg)
    return out


def _spec(req: ChatCompletionRequest, engine: Engine) -> SamplerSpec:
    bias: list[tuple[int, float]] = []
    n_vocab = engine.model.n_vocab if engine.model else 0
    for key, value in (req.logit_bias or {}).items():
        if not key.lstrip("-").isdigit() or not 0 <= int(key) < n_vocab:
            raise InvalidRequest(
                f"logit_bias key {key!r} is not a token id of this model", param="logit_bias"
            )
        bias.append((int(key), value))
    return SamplerSpec(
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        min_p=req.min_p or 0.0,
        repeat_penalty=req.repeat_penalty or 1.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        presence_penalty=req.presence_penalty or 0.0,
        seed=req.seed,
        logit_bias=tuple(bias),
    )


async def start(req: ChatCompletionRequest, engine: Engine) -> Generation:
    """Validate, render, tokenize and admit; every client error surfaces here, before any output."""
    bad = _unsupported(req)
    if bad is not None:
        raise InvalidRequest(f"`{bad}` is not supported by this server yet", param=bad)
    stops = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    spec = _spec(req, engine)
    prompt = await engine.prompt_tokens(template_messages(req))
    max_tokens = req.max_completion_tokens or req.max_tokens
    return engine.generate(prompt, spec, max_tokens=max_tokens, stops=stops)


def _usage(last: Chunk) -> Usage:
    return Usage(
        prompt_tokens=last.prompt_tokens,
        completion_tokens=last.completion_tokens,
        total_tokens=last.prompt_tokens + last.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=last.cached_tokens),
    )


def _new_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


async def complete(req: ChatCompletionRequest, gen: Generation) -> ChatCompletion:
    parts: list[str] = []
    last = Chunk()
    async for chunk in gen:
        parts.append(chunk.text)
        last = chunk
    return ChatCompletion(
        id=_new_id(),
        created=int(time.time()),
        model=req.model,
        choices=[
            Choice(
                index=0,
                message=ChatMessage(content="".join(parts)),
                finish_reason=last.finish_reason or "stop",
            )
        ],
        usage=_usage(last),
    )


async def stream(req: ChatCompletionRequest, gen: Generation) -> AsyncIterator[bytes]:
    """SSE frames. Each engine step's text becomes one frame; the slot is freed if the client leaves."""
    cid, created = _new_id(), int(time.time())

    def frame(choices: list[ChunkChoice], usage: Usage | None = None) -> bytes:
        body = ChatCompletionChunk(id=cid, created=created, model=req.model, choices=choices, usage=usage)
        return b"data: " + _encode(body) + b"\n\n"

    try:
        yield frame([ChunkChoice(index=0, delta=Delta(role="assistant", content=""))])
        last = Chunk()
        try:
            async for chunk in gen:
                last = chunk
                if chunk.text:
                    yield frame([ChunkChoice(index=0, delta=Delta(content=chunk.text))])
        except EdgeRunError as exc:  # headers are gone: report in-band, as OpenAI does
            yield b"data: " + _encode(error_body(exc)) + b"\n\n"
            return
        yield frame([ChunkChoice(index=0, delta=Delta(), finish_reason=last.finish_reason or "stop")])
        if req.stream_options is not None and req.stream_options.include_usage:
            yield frame([], _usage(last))
        yield b"data: [DONE]\n\n"
    finally:
        gen.cancel()
