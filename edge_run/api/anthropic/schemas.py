"""Anthropic's Messages API (``/v1/messages``), as msgspec Structs.

Content blocks and ``tool_choice`` are tagged unions on ``type``, so a block of another kind is refused
with the path that names it (``at $.messages[0].content[1].type``). Requests ignore unknown fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from edge_run.api.openai.schemas import KeepAlive, Probability, SamplingFields, StopList, TokenCount

__all__ = [
    "AnthropicError",
    "AnthropicErrorBody",
    "AnthropicTool",
    "CountTokensRequest",
    "InputMessage",
    "MessageObject",
    "MessageUsage",
    "MessagesRequest",
    "RedactedThinkingBlock",
    "TextBlock",
    "ThinkingBlock",
    "TokenCountResult",
    "ToolChoiceAny",
    "ToolChoiceAuto",
    "ToolChoiceNone",
    "ToolChoiceTool",
    "ToolResultBlock",
    "ToolUseBlock",
]


class TextBlock(Struct, tag="text", tag_field="type"):
    text: str


class ThinkingBlock(Struct, tag="thinking", tag_field="type"):
    thinking: str
    signature: str = ""  # Anthropic's proof of an unaltered thought; a local model's carries none


class RedactedThinkingBlock(Struct, tag="redacted_thinking", tag_field="type"):
    data: str = ""


class ImageBlock(Struct, tag="image", tag_field="type"):
    source: dict[str, Any] | None = None


class DocumentBlock(Struct, tag="document", tag_field="type"):
    source: dict[str, Any] | None = None


class ToolUseBlock(Struct, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(Struct, tag="tool_result", tag_field="type"):
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock | DocumentBlock] = ""
    is_error: bool = False


class InputMessage(Struct):
    role: Literal["user", "assistant"]
    content: (
        str
        | list[
            TextBlock
            | ThinkingBlock
            | RedactedThinkingBlock
            | ImageBlock
            | DocumentBlock
            | ToolUseBlock
            | ToolResultBlock
        ]
    )


class AnthropicTool(Struct, kw_only=True):
    """A client tool. Anthropic's server tools (``bash_...``, ``web_search_...``) are refused by ``type``."""

    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.\-]{1,128}$")]
    type: str | None = None  # "custom", or left out
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoiceAuto(Struct, tag="auto", tag_field="type"):
    disable_parallel_tool_use: bool | None = None


class ToolChoiceAny(Struct, tag="any", tag_field="type"):
    disable_parallel_tool_use: bool | None = None


class ToolChoiceTool(Struct, tag="tool", tag_field="type"):
    name: str
    disable_parallel_tool_use: bool | None = None


class ToolChoiceNone(Struct, tag="none", tag_field="type"):
    pass


class JsonOutputFormat(Struct, tag="json_schema", tag_field="type"):
    schema: dict[str, Any]


class OutputConfig(Struct):
    format: JsonOutputFormat | None = None


class Thinking(Struct):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: Annotated[int, Meta(ge=1024)] | None = None  # as Anthropic; see docs/openai-compatibility.md


class CountTokensRequest(SamplingFields, kw_only=True):
    """``POST /v1/messages/count_tokens``: the conversation part of a messages request."""

    model: str
    messages: Annotated[list[InputMessage], Meta(min_length=1)]
    system: str | list[TextBlock] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: ToolChoiceAuto | ToolChoiceAny | ToolChoiceTool | ToolChoiceNone | None = None
    output_config: OutputConfig | None = None
    thinking: Thinking | None = None
    keep_alive: KeepAlive | None = None


class MessagesRequest(CountTokensRequest, kw_only=True):
    """``POST /v1/messages``. ``temperature`` is Anthropic's 0 to 1; the other OpenAI-range sampling fields are
    edge-run's extensions here."""

    max_tokens: TokenCount
    temperature: Probability | None = None
    stop_sequences: StopList | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None


class MessageUsage(Struct, kw_only=True):
    input_tokens: int  # prompt tokens not read from the cache, as Anthropic counts them
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class MessageObject(Struct, kw_only=True):
    id: str
    model: str
    content: list[ThinkingBlock | TextBlock | ToolUseBlock]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None
    usage: MessageUsage
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"


class TokenCountResult(Struct):
    input_tokens: int


class AnthropicErrorBody(Struct):
    type: str
    message: str


class AnthropicError(Struct):
    """Anthropic's error envelope: ``{"type": "error", "error": {"type", "message"}}``."""

    error: AnthropicErrorBody
    type: Literal["error"] = "error"
