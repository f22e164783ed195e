"""``POST /v1/chat/completions``: the wire request to a :class:`GenRequest`, pieces to JSON or SSE chunks."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from edge_run.api import internal
from edge_run.api.assembly import Piece, Run, Totals, collect, sse
from edge_run.api.errors import error_body
from edge_run.api.internal import CallRecord, GenRequest, JsonOutput, Turn, arguments, function_spec, join_text
from edge_run.api.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    FunctionDelta,
    JsonObjectFormat,
    JsonSchemaFormat,
    Message,
    PromptTokensDetails,
    TextPart,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    ToolCallFunction,
    TopLogprob,
    Usage,
)
from edge_run.errors import EdgeRunError, InvalidRequest

if TYPE_CHECKING:
    from edge_run.engine import Engine
    from edge_run.engine import TokenLogprob as EngineLogprob

__all__ = ["complete", "start", "stop_list", "stream", "translate", "usage"]


def stop_list(stop: str | list[str] | None) -> tuple[str, ...]:
    return (stop,) if isinstance(stop, str) else tuple(stop or ())


def _turn(m: Message, i: int) -> Turn:
    if isinstance(m.content, list):
        content = join_text([p.text if isinstance(p, TextPart) else None for p in m.content], f"messages[{i}].content")
    else:
        content = m.content or ""
    calls = tuple(
        CallRecord(c.id, c.function.name, arguments(c.function.arguments, f"messages[{i}].tool_calls[{k}].arguments"))
        for k, c in enumerate(m.tool_calls or ())
    )
    role = "system" if m.role == "developer" else m.role
    return Turn(role=role, content=content, calls=calls, call_id=m.tool_call_id, name=m.name)


def translate(req: ChatCompletionRequest) -> GenRequest:
    for legacy, instead in (("functions", "tools"), ("function_call", "tool_choice")):
        if getattr(req, legacy) is not None:  # ignoring it would silently drop the client's tools
            raise InvalidRequest(f"`{legacy}` is deprecated and not supported: use `{instead}`", param=legacy)
    if req.top_logprobs is not None and not req.logprobs:
        raise InvalidRequest("`top_logprobs` needs `logprobs: true`", param="top_logprobs")
    fmt = req.response_format
    output = None
    if isinstance(fmt, JsonObjectFormat):
        output = JsonOutput(None, "response_format")
    elif isinstance(fmt, JsonSchemaFormat):
        output = JsonOutput(fmt.json_schema.schema or {"type": "object"}, "response_format")
    choice = req.tool_choice
    return GenRequest(
        model=req.model,
        sampling=req,
        turns=[_turn(m, i) for i, m in enumerate(req.messages)],
        tools=[function_spec(t.function.name, t.function.description, t.function.parameters) for t in req.tools or ()],
        tool_choice=choice if choice is None or isinstance(choice, str) else choice.function.name,
        output=output,
        max_tokens=req.max_completion_tokens or req.max_tokens,
        stops=stop_list(req.stop),
        n=req.n,
        top_logprobs=(req.top_logprobs or 0) if req.logprobs else None,
    )


async def start(req: ChatCompletionRequest, engine: Engine) -> Run:
    return await internal.start(translate(req), engine)


def _logprobs(items: list[EngineLogprob]) -> list[TokenLogprob]:
    def text(b: bytes) -> str:
        return b.decode("utf-8", "replace")

    return [
        TokenLogprob(
            token=text(t.token),
            logprob=t.logprob,
            bytes=list(t.token),
            top_logprobs=[TopLogprob(token=text(b), logprob=lp, bytes=list(b)) for b, lp in t.top],
        )
        for t in items
    ]


def usage(totals: Totals) -> Usage:
    """OpenAI's chat and completions usage."""
    return Usage(
        prompt_tokens=totals.prompt_tokens,
        completion_tokens=totals.completion_tokens,
        total_tokens=totals.prompt_tokens + totals.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=totals.cached_tokens),
    )


def _new_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


async def complete(req: ChatCompletionRequest, run: Run) -> ChatCompletion:
    choices = []
    for i, choice in enumerate(await collect(run)):
        calls = [ToolCall(id=c.id, function=ToolCallFunction(c.name, c.arguments)) for c in choice.calls]
        content = choice.text if run.plan is None else choice.text or None
        choices.append(
            Choice(
                index=i,
                message=ChatMessage(content=content, tool_calls=calls or None),
                finish_reason=choice.finish_reason or "stop",
                logprobs=ChoiceLogprobs(content=_logprobs(choice.logprobs)) if req.logprobs else None,
            )
        )
    return ChatCompletion(
        id=_new_id(), created=int(time.time()), model=req.model, choices=choices, usage=usage(run.totals)
    )


def _tool_deltas(piece: Piece) -> list[ToolCallDelta]:
    """OpenAI's tool-call delta shape: index, id, type and name first; then ``arguments`` fragments."""
    deltas: list[ToolCallDelta] = []
    for c in piece.calls:
        if c.id is not None:
            head = FunctionDelta(name=c.name, arguments="")
            deltas.append(ToolCallDelta(index=c.index, id=c.id, type="function", function=head))
        if c.arguments:
            deltas.append(ToolCallDelta(index=c.index, function=FunctionDelta(arguments=c.arguments)))
    return deltas


async def stream(req: ChatCompletionRequest, run: Run) -> AsyncIterator[bytes]:
    """SSE frames, one per engine step's text; all that are ready go out in one write. A client that leaves frees
    its slots."""
    cid, created = _new_id(), int(time.time())

    def frame(choices: list[ChunkChoice], totals: Usage | None = None) -> bytes:
        return sse(ChatCompletionChunk(id=cid, created=created, model=req.model, choices=choices, usage=totals))

    def frames(piece: Piece) -> Iterator[bytes]:
        tools = _tool_deltas(piece)
        lp = ChoiceLogprobs(content=_logprobs(piece.logprobs)) if piece.logprobs else None
        if piece.text or tools or lp is not None:
            delta = Delta(content=piece.text or None, tool_calls=tools or None)
            yield frame([ChunkChoice(index=piece.choice, delta=delta, logprobs=lp)])
        if piece.finish_reason is not None:
            yield frame([ChunkChoice(index=piece.choice, delta=Delta(), finish_reason=piece.finish_reason)])

    try:
        yield b"".join(frame([ChunkChoice(index=i, delta=Delta(role="assistant", content=""))]) for i in range(req.n))
        try:
            async for ready in run.pieces():  # whatever is ready goes out in one write
                if out := b"".join(f for piece in ready for f in frames(piece)):
                    yield out
        except EdgeRunError as exc:  # headers are gone: report in-band, as OpenAI does
            yield sse(error_body(exc))
            return
        tail = b""
        if req.stream_options is not None and req.stream_options.include_usage:
            tail = frame([], usage(run.totals))
        yield tail + b"data: [DONE]\n\n"
    finally:
        run.cancel()
