"""``/v1/messages`` (Anthropic's Messages API): the wire request to a :class:`GenRequest`, a choice to a message.

The stream's events are :mod:`.events`. Errors use Anthropic's envelope (:mod:`edge_run.api.http.errors`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

from edge_run.api.anthropic.schemas import (
    AnthropicTool,
    CountTokensRequest,
    ImageBlock,
    InputMessage,
    MessageObject,
    MessagesRequest,
    MessageUsage,
    RedactedThinkingBlock,
    TextBlock,
    ThinkingBlock,
    ToolChoiceAny,
    ToolChoiceAuto,
    ToolChoiceNone,
    ToolChoiceTool,
    ToolResultBlock,
    ToolUseBlock,
)
from edge_run.api.anthropic.schemas import Thinking as ThinkingConfig
from edge_run.engine import MEDIA_MARKER, MediaInput
from edge_run.errors import InvalidRequest
from edge_run.serving.assembly import call_input, collect
from edge_run.serving.media import image_input
from edge_run.serving.reasoning import Thinking
from edge_run.serving.request import (
    CallRecord,
    GenRequest,
    JsonOutput,
    Turn,
    function_spec,
    join_parts,
    join_text,
    new_id,
    unsupported_input,
)

if TYPE_CHECKING:
    from edge_run.serving.assembly import Choice, Run, Totals

__all__ = ["complete", "conversation", "stop_reason", "tool_id", "translate", "usage"]

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


def _turns(m: InputMessage, i: int) -> list[Turn]:
    """One message as turns: its tool results first (each a tool turn), then its text and tool calls."""
    if isinstance(m.content, str):
        return [Turn(m.role, m.content)]
    texts: list[str] = []
    media: list[MediaInput] = []
    thoughts: list[str] = []
    calls: list[CallRecord] = []
    results: list[Turn] = []
    for j, block in enumerate(m.content):
        at = f"messages[{i}].content[{j}]"
        if isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ImageBlock) and m.role == "user":
            media.append(_image(block, at))
            texts.append(MEDIA_MARKER)
        elif isinstance(block, ThinkingBlock | RedactedThinkingBlock):
            if m.role != "assistant":
                raise InvalidRequest(f"`{at}`: thinking blocks go in assistant messages", param=at)
            if isinstance(block, ThinkingBlock):  # a redacted thought is Anthropic's ciphertext: nothing to show
                thoughts.append(block.thinking)
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
    if texts or calls or thoughts or not results:
        thought = "\n".join(thoughts) or None
        results.append(Turn(m.role, join_parts(texts), reasoning=thought, calls=tuple(calls), media=tuple(media)))
    return results


def _image(block: ImageBlock, at: str) -> MediaInput:
    """An ``image`` block: ``source`` base64 (``media_type`` and ``data``), or a ``url`` (fetched only with
    ``--allow-image-urls``, as OpenAI's image URLs)."""
    source = block.source or {}
    kind, data, mime = source.get("type"), source.get("data"), source.get("media_type")
    if kind == "url":
        return image_input(str(source.get("url", "")), f"{at}.source")
    if kind != "base64" or not isinstance(data, str) or not isinstance(mime, str):
        raise InvalidRequest(f"`{at}.source` must be base64 with `media_type` and `data`", param=f"{at}.source")
    return image_input(f"data:{mime};base64,{data}", f"{at}.source")


def _tool(tool: AnthropicTool, i: int) -> dict[str, object]:
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
        thinking=_thinking(req.thinking, req.reasoning_budget),
        template_kwargs=req.chat_template_kwargs,
    )


def _thinking(thinking: ThinkingConfig | None, budget: int | None) -> Thinking | None:
    """``enabled`` and ``disabled`` switch a thinking model's thought, ``budget_tokens`` bounds it; ``adaptive``
    leaves it to the template."""
    if thinking is None or thinking.type == "adaptive":
        return None if budget is None else Thinking(budget=budget)
    return Thinking(enabled=thinking.type == "enabled", budget=thinking.budget_tokens or budget)


def translate(req: MessagesRequest) -> GenRequest:
    # the engine says which stop sequence ended the answer (Chunk.stop): no logprobs needed to find it
    return dataclasses.replace(conversation(req), max_tokens=req.max_tokens, stops=tuple(req.stop_sequences or ()))


def stop_reason(choice: Choice) -> tuple[StopReason, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` for a finished choice."""
    if choice.finish_reason == "tool_calls":
        return "tool_use", None
    if choice.finish_reason == "length":
        return "max_tokens", None
    return ("stop_sequence", choice.stop) if choice.stop is not None else ("end_turn", None)


def tool_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


def usage(totals: Totals) -> MessageUsage:
    """Anthropic counts the prompt tokens read from the cache apart from ``input_tokens``."""
    return MessageUsage(
        input_tokens=totals.prompt_tokens - totals.cached_tokens,
        output_tokens=totals.completion_tokens,
        cache_read_input_tokens=totals.cached_tokens,
    )


async def complete(req: MessagesRequest, run: Run) -> MessageObject:
    [choice] = await collect(run)
    reason, sequence = stop_reason(choice)
    content: list[ThinkingBlock | TextBlock | ToolUseBlock] = [
        ThinkingBlock(b.text)
        if b.reasoning
        else TextBlock(b.text)
        if b.call_id is None
        else ToolUseBlock(tool_id(b.call_id), b.name or "", call_input(b.text))
        for b in choice.blocks
    ]
    return MessageObject(
        id=new_id("msg_"),
        model=req.model,
        content=content,
        stop_reason=reason,
        stop_sequence=sequence,
        usage=usage(run.totals),
    )
