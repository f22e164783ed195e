"""OpenAI's Responses API (``/v1/responses``), as msgspec Structs.

Input items are one loose Struct checked field by field in :mod:`.translate`: a message's ``type``
may be left out, so the items cannot be a tagged union. Everything else follows
:mod:`edge_run.api.openai.schemas`: requests ignore unknown fields, responses mirror OpenAI's shapes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from edge_run.api.openai.schemas import (
    JsonObjectFormat,
    KeepAlive,
    ReasoningEffort,
    SamplingFields,
    TextFormat,
    TokenCount,
    ToolName,
)

__all__ = [
    "ContentPart",
    "DeletedResponse",
    "FunctionCallItem",
    "FunctionTool",
    "FunctionToolChoice",
    "IncompleteDetails",
    "InputItem",
    "InputText",
    "InputTokensDetails",
    "OutputMessage",
    "OutputText",
    "OutputTokensDetails",
    "ReasoningConfig",
    "ReasoningItem",
    "ReasoningText",
    "Refusal",
    "ResponseError",
    "ResponseJsonSchemaFormat",
    "ResponseObject",
    "ResponseRequest",
    "ResponseUsage",
    "SummaryText",
    "TextConfig",
]


class InputText(Struct, tag="input_text", tag_field="type"):
    text: str


class OutputText(Struct, tag="output_text", tag_field="type", kw_only=True):
    text: str
    annotations: list[Any] = msgspec.field(default_factory=list)
    logprobs: list[Any] = msgspec.field(default_factory=list)


class Refusal(Struct, tag="refusal", tag_field="type"):
    refusal: str


class ReasoningText(Struct, tag="reasoning_text", tag_field="type"):
    text: str


class SummaryText(Struct, tag="summary_text", tag_field="type"):
    text: str


class InputImage(Struct, tag="input_image", tag_field="type"):
    image_url: str | None = None


class InputFile(Struct, tag="input_file", tag_field="type"):
    """A file inline (``file_data``, a ``data:`` URL) or by URL; an image file is taken as ``input_image`` is."""

    filename: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    file_id: str | None = None


ContentPart = InputText | OutputText | Refusal | ReasoningText | InputImage | InputFile


class InputItem(Struct, kw_only=True):
    """An item of ``input``: a message (``type`` "message", or left out), a ``function_call`` or its
    ``function_call_output``. Which fields each kind needs is checked when it is translated."""

    type: str = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[ContentPart] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[ContentPart] | None = None
    summary: list[SummaryText] | None = None  # a reasoning item's
    id: str | None = None
    status: str | None = None


class FunctionTool(Struct, kw_only=True):
    """A tool; only ``type: "function"`` is served (hosted tools are refused by name)."""

    type: str
    name: ToolName | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FunctionToolChoice(Struct):
    name: str
    type: Literal["function"] = "function"


class ResponseJsonSchemaFormat(Struct, tag="json_schema", tag_field="type", kw_only=True):
    name: str
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class TextConfig(Struct, kw_only=True):
    format: TextFormat | JsonObjectFormat | ResponseJsonSchemaFormat = msgspec.field(default_factory=TextFormat)


class ReasoningConfig(Struct, kw_only=True):
    effort: ReasoningEffort | None = None
    summary: str | None = None  # accepted; the thought itself is returned, never a summary


class ResponseRequest(SamplingFields, kw_only=True):
    """``POST /v1/responses``. The sampling fields beyond ``temperature`` and ``top_p`` are edge-run's extensions."""

    model: str
    input: str | Annotated[list[InputItem], Meta(min_length=1)]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: TokenCount | None = None
    text: TextConfig | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["disabled", "auto"] | None = None
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    keep_alive: KeepAlive | None = None
    reasoning: ReasoningConfig | None = None


class OutputMessage(Struct, tag="message", tag_field="type", kw_only=True):
    id: str
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]
    role: Literal["assistant"] = "assistant"


class ReasoningItem(Struct, tag="reasoning", tag_field="type", kw_only=True):
    """A thinking model's thought: whole in ``content``, and again as ``summary`` (clients read one or the other)."""

    id: str
    content: list[ReasoningText]
    summary: list[SummaryText] = msgspec.field(default_factory=list)
    encrypted_content: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] = "completed"


class FunctionCallItem(Struct, tag="function_call", tag_field="type", kw_only=True):
    id: str
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"]


class InputTokensDetails(Struct):
    cached_tokens: int = 0


class OutputTokensDetails(Struct):
    reasoning_tokens: int = 0


class ResponseUsage(Struct, kw_only=True):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens_details: OutputTokensDetails = msgspec.field(default_factory=OutputTokensDetails)


class ResponseError(Struct):
    code: str
    message: str


class IncompleteDetails(Struct):
    reason: str


class ResponseObject(Struct, kw_only=True):
    """OpenAI's ``response`` object; the request's settings are echoed as OpenAI echoes them."""

    id: str
    created_at: int
    model: str
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    output: list[ReasoningItem | OutputMessage | FunctionCallItem]
    object: Literal["response"] = "response"
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    store: bool = True
    temperature: float | None = None
    top_p: float | None = None
    text: TextConfig = msgspec.field(default_factory=TextConfig)
    tool_choice: Literal["none", "auto", "required"] | FunctionToolChoice = "auto"
    tools: list[FunctionTool] = msgspec.field(default_factory=list)
    truncation: Literal["disabled", "auto"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


class DeletedResponse(Struct):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True
