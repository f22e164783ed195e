"""``POST /v1/chat/completions``: the wire request to a :class:`GenRequest`, pieces to JSON or SSE chunks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from edge_run.api.http.errors import error_body
from edge_run.api.http.sse import sse
from edge_run.api.openai.schemas import (
    AudioPart,
    ChatCompletion,
    ChatCompletionChunk,
    ChatMessage,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    CompletionTokensDetails,
    Delta,
    FunctionDelta,
    ImagePart,
    JsonObjectFormat,
    JsonSchemaFormat,
    PromptTokensDetails,
    TextPart,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    ToolCallFunction,
    TopLogprob,
    Usage,
)
from edge_run.engine import MEDIA_MARKER, MediaInput
from edge_run.errors import InvalidRequest
from edge_run.serving.assembly import collect
from edge_run.serving.media import audio_input, image_input
from edge_run.serving.reasoning import Thinking, from_effort
from edge_run.serving.request import (
    CallRecord,
    GenRequest,
    JsonOutput,
    Turn,
    arguments,
    function_spec,
    join_parts,
    new_id,
)

if TYPE_CHECKING:
    from edge_run.api.openai.schemas import ChatCompletionRequest, Message
    from edge_run.engine import TokenLogprob as EngineLogprob
    from edge_run.errors import EdgeRunError
    from edge_run.serving.assembly import Piece, Run, Totals

__all__ = ["ChatFrames", "complete", "stop_list", "translate", "usage"]


def stop_list(stop: str | list[str] | None) -> tuple[str, ...]:
    return (stop,) if isinstance(stop, str) else tuple(stop or ())


def _parts(parts: list[TextPart | ImagePart | AudioPart], param: str) -> tuple[str, tuple[MediaInput, ...]]:
    """A message's parts as text, an image or audio part a ``MEDIA_MARKER`` where it stands, and the media."""
    texts: list[str] = []
    media: list[MediaInput] = []
    for j, part in enumerate(parts):
        if isinstance(part, TextPart):
            texts.append(part.text)
            continue
        at = f"{param}[{j}]"
        media.append(image_input(part.image_url.url, at) if isinstance(part, ImagePart)
                     else audio_input(part.input_audio.data, part.input_audio.format, at))  # fmt: skip
        texts.append(MEDIA_MARKER)
    return join_parts(texts), tuple(media)


def _turn(m: Message, i: int) -> Turn:
    media: tuple[MediaInput, ...] = ()
    if isinstance(m.content, list):
        content, media = _parts(m.content, f"messages[{i}].content")
        if media and m.role != "user":
            raise InvalidRequest("only user messages may hold images or audio", param=f"messages[{i}].content")
    else:
        content = m.content or ""
    calls = tuple(
        CallRecord(c.id, c.function.name, arguments(c.function.arguments, f"messages[{i}].tool_calls[{k}].arguments"))
        for k, c in enumerate(m.tool_calls or ())
    )
    role = "system" if m.role == "developer" else m.role
    thought = m.reasoning_content if m.reasoning_content is not None else m.reasoning
    return Turn(
        role=role, content=content, reasoning=thought, calls=calls, call_id=m.tool_call_id, name=m.name, media=media
    )


def _thinking(req: ChatCompletionRequest) -> Thinking | None:
    """``reasoning_effort`` (OpenAI), or ``think`` (Ollama: a switch, or an effort)."""
    if req.reasoning_effort is not None and req.think is not None:
        raise InvalidRequest("send `reasoning_effort` or `think`, not both", param="think")
    if isinstance(req.think, bool):
        return Thinking(enabled=req.think, budget=req.reasoning_budget)
    return from_effort(req.think or req.reasoning_effort, req.reasoning_budget)


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
        thinking=_thinking(req),
        template_kwargs=req.chat_template_kwargs,
    )


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
        completion_tokens_details=CompletionTokensDetails(
            reasoning_tokens=totals.reasoning_tokens,
            accepted_prediction_tokens=totals.accepted_prediction_tokens,
            rejected_prediction_tokens=totals.rejected_prediction_tokens,
        ),
    )


async def complete(req: ChatCompletionRequest, run: Run) -> ChatCompletion:
    choices = []
    for i, choice in enumerate(await collect(run)):
        calls = [ToolCall(id=c.id, function=ToolCallFunction(c.name, c.arguments)) for c in choice.calls]
        content = choice.text if run.plan is None else choice.text or None
        message = ChatMessage(content=content, tool_calls=calls or None)
        if choice.reasoning is not None:
            message.reasoning_content = message.reasoning = choice.reasoning
        choices.append(
            Choice(
                index=i,
                message=message,
                finish_reason=choice.finish_reason or "stop",
                logprobs=ChoiceLogprobs(content=_logprobs(choice.logprobs)) if req.logprobs else None,
            )
        )
    return ChatCompletion(
        id=new_id("chatcmpl-"), created=int(time.time()), model=req.model, choices=choices, usage=usage(run.totals)
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


class ChatFrames:
    """The stream's ``chat.completion.chunk`` frames: one per engine step's text, then usage and ``[DONE]``."""

    def __init__(self, req: ChatCompletionRequest, run: Run) -> None:
        self.req = req
        self.run = run
        self.id, self.created = new_id("chatcmpl-"), int(time.time())

    def _frame(self, choices: list[ChunkChoice], totals: Usage | None = None) -> bytes:
        chunk = ChatCompletionChunk(
            id=self.id, created=self.created, model=self.req.model, choices=choices, usage=totals
        )
        return sse(chunk)

    def head(self) -> bytes:
        role = Delta(role="assistant", content="")
        return b"".join(self._frame([ChunkChoice(index=i, delta=role)]) for i in range(self.req.n))

    def _piece(self, piece: Piece) -> Iterator[bytes]:
        tools = _tool_deltas(piece)
        lp = ChoiceLogprobs(content=_logprobs(piece.logprobs)) if piece.logprobs else None
        if piece.text or piece.reasoning or tools or lp is not None:
            thought = piece.reasoning or None
            delta = Delta(content=piece.text or None, tool_calls=tools or None)
            delta.reasoning_content = delta.reasoning = thought
            yield self._frame([ChunkChoice(index=piece.choice, delta=delta, logprobs=lp)])
        if piece.finish_reason is not None:
            yield self._frame([ChunkChoice(index=piece.choice, delta=Delta(), finish_reason=piece.finish_reason)])

    def pieces(self, ready: list[Piece]) -> bytes:
        return b"".join(f for piece in ready for f in self._piece(piece))

    def tail(self) -> bytes:
        options = self.req.stream_options
        totals = self._frame([], usage(self.run.totals)) if options is not None and options.include_usage else b""
        return totals + b"data: [DONE]\n\n"

    def failed(self, exc: EdgeRunError) -> bytes:
        return sse(error_body(exc))  # as OpenAI does
