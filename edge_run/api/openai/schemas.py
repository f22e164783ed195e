"""The OpenAI wire format, as msgspec Structs.

Request Structs ignore unknown fields (clients send extras); response Structs mirror OpenAI's
shapes field for field. Constraints live in reusable ``Annotated`` aliases so decode errors name
the offending path (``at $.messages[0].role``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from edge_run.api.openai.parts import AudioPart, ImagePart, ImageUrl, InputAudio, TextPart
from edge_run.keys.usage import UsageRow

__all__ = [
    "AudioPart",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Choice",
    "ChoiceLogprobs",
    "ChunkChoice",
    "Completion",
    "CompletionChoice",
    "CompletionLogprobs",
    "CompletionRequest",
    "Delta",
    "Embedding",
    "EmbeddingList",
    "EmbeddingRequest",
    "EmbeddingUsage",
    "FunctionDelta",
    "ImagePart",
    "ImageUrl",
    "InputAudio",
    "JsonObjectFormat",
    "JsonSchemaFormat",
    "KeepAlive",
    "Message",
    "ModelCard",
    "ModelList",
    "Probability",
    "PromptTokensDetails",
    "ReasoningEffort",
    "SamplingFields",
    "StopList",
    "StreamOptions",
    "TextFormat",
    "TextPart",
    "TokenCount",
    "TokenLogprob",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallFunction",
    "ToolName",
    "TopLogprob",
    "Usage",
    "UsageReport",
]

Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
TokenCount = Annotated[int, Meta(ge=1)]
# edge-run's: seconds the model stays loaded once idle (0: unload after this answer, -1: never)
KeepAlive = Annotated[float, Meta(ge=-1)]
StopList = Annotated[list[str], Meta(max_length=16)]
ToolName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
ReasoningEffort = Literal["none", "minimal", "low", "medium", "high", "xhigh"]
LogitBias = dict[str, Annotated[float, Meta(ge=-100, le=100)]]


class SamplingFields(Struct, kw_only=True):
    """The sampling fields every generating request shares, in OpenAI's ranges.

    ``top_k``, ``min_p`` and ``repeat_penalty`` are llama.cpp's samplers, as in llama-server; the other
    fields are OpenAI's. A wire format with other ranges (Anthropic's temperature) redeclares the field.
    """

    temperature: Temperature | None = None
    top_p: Probability | None = None
    seed: int | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    min_p: Probability | None = None
    repeat_penalty: Annotated[float, Meta(gt=0.0)] | None = None
    grammar: Annotated[str, Meta(min_length=1)] | None = None  # llama.cpp's: GBNF the whole answer must match
    chat_template_kwargs: dict[str, Any] | None = None  # more names for the chat template (`enable_thinking`...)
    reasoning_budget: Annotated[int, Meta(ge=0)] | None = None  # a thought's tokens at most (then it is closed)


class ToolCallFunction(Struct):
    name: str
    arguments: str


class ToolCall(Struct):
    id: str
    function: ToolCallFunction
    type: Literal["function"] = "function"


class Message(Struct):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart | ImagePart | AudioPart] | None = None
    reasoning_content: str | None = None  # an assistant turn's thought, sent back (llama-server, DeepSeek)
    reasoning: str | None = None  # the same, under Ollama's and OpenRouter's name
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class StreamOptions(Struct):
    include_usage: bool = False


class FunctionDef(Struct):
    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatCompletionTool(Struct):
    function: FunctionDef
    type: Literal["function"] = "function"


class FunctionName(Struct):
    name: str


class NamedToolChoice(Struct):
    function: FunctionName
    type: Literal["function"] = "function"


class TextFormat(Struct, tag="text", tag_field="type"):
    pass


class JsonObjectFormat(Struct, tag="json_object", tag_field="type"):
    pass


class JsonSchemaSpec(Struct):
    name: str
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class JsonSchemaFormat(Struct, tag="json_schema", tag_field="type"):
    json_schema: JsonSchemaSpec


class ChatCompletionRequest(SamplingFields, kw_only=True):
    """``POST /v1/chat/completions``."""

    model: str
    messages: Annotated[list[Message], Meta(min_length=1)]
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    stop: str | StopList | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Meta(ge=1, le=128)] = 1
    user: str | None = None
    tools: list[ChatCompletionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: TextFormat | JsonObjectFormat | JsonSchemaFormat | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    keep_alive: KeepAlive | None = None
    reasoning_effort: ReasoningEffort | None = None
    think: bool | Literal["low", "medium", "high"] | None = None  # Ollama's switch for thinking
    functions: list[Any] | None = None  # OpenAI's deprecated form of `tools`: refused with a 400 that says so
    function_call: Any = None


class PromptTokensDetails(Struct):
    cached_tokens: int = 0


class CompletionTokensDetails(Struct):
    reasoning_tokens: int = 0  # tokens of the thought before the answer
    accepted_prediction_tokens: int = 0  # drafted tokens (looked up in the text so far) that sampling kept
    rejected_prediction_tokens: int = 0


class Usage(Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails = msgspec.field(default_factory=PromptTokensDetails)
    completion_tokens_details: CompletionTokensDetails = msgspec.field(default_factory=CompletionTokensDetails)


class ChatMessage(Struct):
    content: str | None
    role: Literal["assistant"] = "assistant"
    tool_calls: list[ToolCall] | None = None
    # the thought before the answer (llama-server's and DeepSeek's name), absent when the model did not think
    reasoning_content: str | UnsetType = UNSET
    reasoning: str | UnsetType = UNSET  # the same thought, under Ollama's and OpenRouter's name


class TopLogprob(Struct):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(Struct):
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(Struct):
    content: list[TokenLogprob] | None
    refusal: None = None


class Choice(Struct):
    index: int
    message: ChatMessage
    finish_reason: str
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(Struct, kw_only=True):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    object: Literal["chat.completion"] = "chat.completion"
    system_fingerprint: str | None = None


class FunctionDelta(Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(Struct, omit_defaults=True):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta | None = None


class Delta(Struct, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class ChunkChoice(Struct):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(Struct, kw_only=True):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    usage: Usage | None = None


class ModelCard(Struct, kw_only=True):
    """OpenAI's model object, plus where the model stands in this server (edge-run's fields)."""

    id: str
    created: int
    owned_by: str = "edge-run"
    object: Literal["model"] = "model"
    status: Literal["loaded", "loading", "unloaded", "failed"] = "unloaded"
    error: str | None = None  # why the latest load failed
    expires_in: float | None = None  # seconds until an idle loaded model unloads
    capabilities: list[Literal["chat", "embedding", "rerank"]] = []  # which routes serve it (empty: an upstream's)
    inputs: list[Literal["text", "image", "audio"]] = []  # what its chat prompts may hold (empty: an upstream's)


class ModelList(Struct):
    data: list[ModelCard]
    object: Literal["list"] = "list"


class CompletionRequest(SamplingFields, kw_only=True):
    """``POST /v1/completions`` (legacy text completion)."""

    model: str
    prompt: str | Annotated[list[str], Meta(min_length=1, max_length=16)]
    max_tokens: TokenCount | None = 16
    n: Annotated[int, Meta(ge=1, le=128)] = 1
    stop: str | StopList | None = None
    echo: bool = False
    logprobs: Annotated[int, Meta(ge=0, le=5)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    suffix: str | None = None
    best_of: Annotated[int, Meta(ge=1)] | None = None
    user: str | None = None
    keep_alive: KeepAlive | None = None


class CompletionLogprobs(Struct):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(Struct):
    index: int
    text: str
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class Completion(Struct, kw_only=True):
    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    object: Literal["text_completion"] = "text_completion"


class EmbeddingRequest(Struct, kw_only=True):
    """``POST /v1/embeddings``: texts, one token array or token arrays (2048 inputs at most, as OpenAI's)."""

    model: str
    input: str | Annotated[list[str | int | list[int]], Meta(min_length=1, max_length=2048)]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Meta(ge=1)] | None = None  # Matryoshka-trained models only
    user: str | None = None
    keep_alive: KeepAlive | None = None
    # edge-run's: prepend the model's instruction prefix for queries or documents (nomic's `search_query: `...)
    input_type: Literal["query", "document"] | None = None
    truncate: bool = False  # edge-run's: cut an input longer than the model takes instead of a 400


class Embedding(Struct):
    index: int
    embedding: list[float] | str
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(Struct):
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
    object: Literal["list"] = "list"


class UsageReport(Struct, kw_only=True):
    """``GET /v1/usage`` (edge-run's): tokens per day, model or key."""

    since: float  # Unix time
    by: str
    scope: Literal["all keys", "this key"]
    data: list[UsageRow]
