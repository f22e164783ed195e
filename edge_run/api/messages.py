"""``/v1/messages`` (Anthropic's Messages API): the wire request to a :class:`GenRequest`, pieces to a message or
its events.

The stream follows Anthropic's order: ``message_start``, ``ping``, then for each content block
``content_block_start``, its ``content_block_delta`` s (``text_delta`` or ``input_json_delta``) and
``content_block_stop``; last ``message_delta`` (``stop_reason`` and usage) and ``message_stop``. A failure
mid-stream is an ``error`` event. Errors before the stream use Anthropic's envelope (:mod:`.errors`).
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Literal

from edge_run.api.assembly import BlockEvent, Choice, Run, Totals, call_input, collect, sse
from edge_run.api.errors import anthropic_error
from edge_run.api.internal import CallRecord, GenRequest, JsonOutput, Turn, function_spec, join_text, unsupported_input
from edge_run.api.schemas_messages import (
    CountTokensRequest,
    InputMessage,
    MessageObject,
    MessagesRequest,
    MessageUsage,
    TextBlock,
    Tool,
    ToolChoiceAny,
    ToolChoiceAuto,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
)
from edge_run.errors import EdgeRunError, InvalidRequest

if TYPE_CHECKING:
    from edge_run.engine import TokenLogprob as EngineLogprob

__all__ = ["complete", "conversation", "stream", "translate"]

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


def _turns(m: InputMessage, i: int) -> list[Turn]:
    """One message as turns: its tool results first (each a tool turn), then its text and tool calls."""
    if isinstance(m.content, str):
        return [Turn(m.role, m.content)]
    texts: list[str] = []
    calls: list[CallRecord] = []
    results: list[Turn] = []
    for j, block in enumerate(m.content):
        at = f"messages[{i}].content[{j}]"
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            if m.role != "assistant":
                raise InvalidRequest(f"`{at}`: `tool_use` blocks go in assistant messages", param=at)
            calls.append(CallRecord(block.id, block.name, block.input))
        elif isinstance(block, ToolResultBlock):
            if m.role != "user":
                raise InvalidRequest(f"`{at}`: `tool_result` blocks go in user messages", param=at)
            content = block.content
            if isinstance(content, list):
                content = join_text([b.text if isinstance(b, TextBlock) else None for b in content], f"{at}.content")
            results.append(Turn("tool", ("Error: " if block.is_error else "") + content, call_id=block.tool_use_id))
        else:
            raise unsupported_input(at)
    if texts or calls or not results:
        results.append(Turn(m.role, "\n".join(texts), calls=tuple(calls)))
    return results


def _tool(tool: Tool, i: int) -> dict[str, object]:
    if tool.type not in (None, "custom"):
        raise InvalidRequest(
            f"server tools (`{tool.type}`) are not supported; only client tools with an `input_schema` are",
            param=f"tools[{i}].type",
        )
    if tool.input_schema is None:
        raise InvalidRequest(f"`tools[{i}].input_schema` is required", param=f"tools[{i}].input_schema")
    return function_spec(tool.name, tool.description, tool.input_schema)


_CHOICES: dict[type, str] = {ToolChoiceAuto: "auto", ToolChoiceAny: "required", ToolChoiceNone: "none"}


def conversation(req: CountTokensRequest) -> GenRequest:
    """The prompt part of a request: system, messages, tools and output format (what ``count_tokens`` counts)."""
    if req.thinking is not None and req.thinking.type != "disabled":
        raise InvalidRequest("extended thinking is not supported by this server", param="thinking.type")
    turns: list[Turn] = []
    if req.system:
        system = req.system if isinstance(req.system, str) else "\n".join(b.text for b in req.system)
        turns.append(Turn("system", system))
    for i, m in enumerate(req.messages):
        turns += _turns(m, i)
    choice = req.tool_choice
    fmt = req.output_config.format if req.output_config is not None else None
    return GenRequest(
        model=req.model,
        sampling=req,
        turns=turns,
        tools=[_tool(t, i) for i, t in enumerate(req.tools or ())],
        tool_choice=choice.name if isinstance(choice, ToolChoiceTool) else _CHOICES.get(type(choice)),
        output=JsonOutput(fmt.schema, "output_config.format") if fmt is not None else None,
    )


def translate(req: MessagesRequest) -> GenRequest:
    stops = tuple(req.stop_sequences or ())
    # the tokens' text tells which stop sequence ended the answer (the engine only says that one did)
    return dataclasses.replace(
        conversation(req), max_tokens=req.max_tokens, stops=stops, top_logprobs=0 if stops else None
    )


def _stop(choice: Choice, stops: list[str] | None) -> tuple[StopReason, str | None]:
    if choice.finish_reason == "tool_calls":
        return "tool_use", None
    if choice.finish_reason == "length":
        return "max_tokens", None
    matched = _matched_stop(choice.logprobs, stops or [])
    return ("stop_sequence", matched) if matched is not None else ("end_turn", None)


def _matched_stop(tokens: list[EngineLogprob], stops: list[str]) -> str | None:
    """The stop sequence in the generated tokens, if any: the first one to appear ended the answer."""
    text = b"".join(t.token for t in tokens).decode("utf-8", "replace")
    found = [(text.find(s), k) for k, s in enumerate(stops) if s in text]
    return stops[min(found)[1]] if found else None


def _tool_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


def _usage(totals: Totals) -> MessageUsage:
    """Anthropic counts the prompt tokens read from the cache apart from ``input_tokens``."""
    return MessageUsage(
        input_tokens=totals.prompt_tokens - totals.cached_tokens,
        output_tokens=totals.completion_tokens,
        cache_read_input_tokens=totals.cached_tokens,
    )


def _new_id() -> str:
    return "msg_" + secrets.token_hex(12)


async def complete(req: MessagesRequest, run: Run) -> MessageObject:
    [choice] = await collect(run)
    reason, sequence = _stop(choice, req.stop_sequences)
    content: list[TextBlock | ToolUseBlock] = [
        TextBlock(b.text) if b.call_id is None else ToolUseBlock(_tool_id(b.call_id), b.name or "", call_input(b.text))
        for b in choice.blocks
    ]
    return MessageObject(
        id=_new_id(),
        model=req.model,
        content=content,
        stop_reason=reason,
        stop_sequence=sequence,
        usage=_usage(run.totals),
    )


def _block_frames(e: BlockEvent) -> bytes:
    b = e.block
    if e.kind == "start":
        start = TextBlock("") if b.call_id is None else ToolUseBlock(_tool_id(b.call_id), b.name or "", {})
        body: dict[str, object] = {"type": "content_block_start", "index": b.index, "content_block": start}
    elif e.kind == "delta":
        delta = {"type": "text_delta", "text": e.delta}
        if b.call_id is not None:
            delta = {"type": "input_json_delta", "partial_json": e.delta}
        body = {"type": "content_block_delta", "index": b.index, "delta": delta}
    else:
        body = {"type": "content_block_stop", "index": b.index}
    return sse(body, str(body["type"]))


async def stream(req: MessagesRequest, run: Run) -> AsyncIterator[bytes]:
    """The message's events; whatever is ready goes out in one write. A client that leaves frees the slot."""
    prompt_tokens = run.totals.prompt_tokens
    head = MessageObject(
        id=_new_id(),
        model=req.model,
        content=[],
        stop_reason=None,
        stop_sequence=None,
        usage=MessageUsage(input_tokens=prompt_tokens, output_tokens=0),
    )
    choice = Choice()
    try:
        yield sse({"type": "message_start", "message": head}, "message_start") + sse({"type": "ping"}, "ping")
        try:
            async for ready in run.pieces():
                frames = [_block_frames(e) for piece in ready for e in choice.push(piece)]
                if frames:
                    yield b"".join(frames)
        except EdgeRunError as exc:  # headers are gone: report in-band, as Anthropic does
            yield sse(anthropic_error(exc.status, exc.message), "error")
            return
        reason, sequence = _stop(choice, req.stop_sequences)
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        # usage here is cumulative: it replaces message_start's, now that the cached prompt tokens are known
        yield sse({"type": "message_delta", "delta": delta, "usage": _usage(run.totals)}, "message_delta") + sse(
            {"type": "message_stop"}, "message_stop"
        )
    finally:
        run.cancel()
