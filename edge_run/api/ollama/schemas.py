"""Ollama's API (``/api/*``), as msgspec Structs.

Requests ignore unknown top-level fields (clients send extras), but ``options`` is checked field by field: an
option Ollama does not know, or a value of the wrong type, is a 400 naming it (``at $.options.foo``). Answers
mirror Ollama's shapes; durations are nanoseconds, times RFC 3339.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from edge_run.api.openai.schemas import Penalty, Probability, StopList, Temperature, ToolName

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "ChatResponse",
    "CopyRequest",
    "Details",
    "EmbedRequest",
    "EmbedResponse",
    "EmbeddingsRequest",
    "EmbeddingsResponse",
    "Function",
    "FunctionCall",
    "GenerateRequest",
    "GenerateResponse",
    "KeepAlive",
    "ModelName",
    "Options",
    "OutMessage",
    "Progress",
    "PullRequest",
    "RunningModel",
    "RunningModels",
    "ShowRequest",
    "ShowResponse",
    "TagModel",
    "Tags",
    "Tool",
    "ToolCall",
    "Version",
]

# Ollama's keep_alive: seconds, or a Go duration ("5m", "1h30m", "0", "-1"); negative keeps the model loaded.
KeepAlive = float | str
Effort = Literal["low", "medium", "high"]
Format = Literal["json", ""] | dict[str, Any]


class Options(Struct, forbid_unknown_fields=True, kw_only=True):
    """``options``: every name Ollama knows. The sampling ones are honoured; ``num_ctx`` is checked against the
    server's context; the load-time and hardware ones (``num_gpu``, ``num_thread``...) are edge-run's settings,
    not a request's, and are ignored; ``mirostat``, ``tfs_z`` and ``typical_p`` are refused when they would act.
    ``tool_choice`` is edge-run's."""

    temperature: Temperature | None = None
    top_p: Probability | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    min_p: Probability | None = None
    seed: int | None = None
    num_predict: int | None = None  # -1 (and -2): no limit but the context
    stop: StopList | None = None
    repeat_penalty: Annotated[float, Meta(gt=0.0)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    num_ctx: Annotated[int, Meta(ge=1)] | None = None
    typical_p: float | None = None
    tfs_z: float | None = None
    mirostat: int | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    repeat_last_n: int | None = None
    penalize_newline: bool | None = None
    num_keep: int | None = None
    num_batch: int | None = None
    num_gpu: int | None = None
    main_gpu: int | None = None
    num_thread: int | None = None
    numa: bool | None = None
    low_vram: bool | None = None
    f16_kv: bool | None = None
    logits_all: bool | None = None
    vocab_only: bool | None = None
    use_mmap: bool | None = None
    use_mlock: bool | None = None
    # edge-run's: OpenAI's tool_choice ("auto", "none", "required" or a tool's name). Ollama's API cannot force a
    # call, and its clients pass `options` through as they are
    tool_choice: str | None = None


class FunctionCall(Struct, kw_only=True):
    name: str
    arguments: dict[str, Any] = {}
    index: int | None = None


class ToolCall(Struct, kw_only=True, omit_defaults=True):
    function: FunctionCall
    id: str | None = None


class ChatMessage(Struct, kw_only=True):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    thinking: str | None = None
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None


class Function(Struct, kw_only=True):
    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(Struct, kw_only=True):
    function: Function
    type: Literal["function"] = "function"


class _Generating(Struct, kw_only=True):
    """What ``/api/chat`` and ``/api/generate`` share."""

    model: str
    stream: bool = True
    format: Format | None = None
    options: Options | None = None
    think: bool | Effort | None = None
    keep_alive: KeepAlive | None = None


class ChatRequest(_Generating, kw_only=True):
    """``POST /api/chat``. No messages: the model is loaded (or, with ``keep_alive: 0``, unloaded) and nothing
    generated, as Ollama does."""

    messages: list[ChatMessage] = []
    tools: list[Tool] | None = None


class GenerateRequest(_Generating, kw_only=True):
    """``POST /api/generate``. ``template``, ``suffix``, ``context`` and ``images`` are refused when set."""

    prompt: str = ""
    system: str | None = None
    template: str | None = None
    suffix: str | None = None
    raw: bool = False
    images: list[str] | None = None
    context: list[int] | None = None


class OutMessage(Struct, kw_only=True, omit_defaults=True):
    role: Literal["assistant"]
    content: str
    thinking: str | None = None
    tool_calls: list[ToolCall] | None = None


class _Done(Struct, kw_only=True, omit_defaults=True):
    """A reply's fields: the figures only on the last object (``done: true``)."""

    model: str
    created_at: str
    done: bool
    done_reason: str | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class ChatResponse(_Done, kw_only=True, omit_defaults=True):
    message: OutMessage


class GenerateResponse(_Done, kw_only=True, omit_defaults=True):
    response: str
    thinking: str | None = None


class EmbedRequest(Struct, kw_only=True):
    """``POST /api/embed``."""

    model: str
    input: str | Annotated[list[str], Meta(min_length=1, max_length=2048)]
    truncate: bool = True
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    options: Options | None = None
    keep_alive: KeepAlive | None = None


class EmbedResponse(Struct, kw_only=True):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class EmbeddingsRequest(Struct, kw_only=True):
    """``POST /api/embeddings`` (Ollama's older route): one ``prompt``, one vector."""

    model: str
    prompt: Annotated[str, Meta(min_length=1)]
    options: Options | None = None
    keep_alive: KeepAlive | None = None


class EmbeddingsResponse(Struct):
    embedding: list[float]


class Details(Struct, kw_only=True):
    """A model's ``details``, read from its GGUF header."""

    format: str
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str
    parent_model: str = ""


class TagModel(Struct, kw_only=True):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: Details


class Tags(Struct):
    models: list[TagModel]


class ModelName(Struct, kw_only=True):
    """A request that names one model (``/api/show``, ``/api/delete``): ``model``, or the older ``name``."""

    model: str | None = None
    name: str | None = None

    @property
    def id(self) -> str:
        return self.model or self.name or ""


class ShowRequest(ModelName, kw_only=True):
    verbose: bool = False


class ShowResponse(Struct, kw_only=True):
    modified_at: str
    details: Details
    model_info: dict[str, Any]
    capabilities: list[str]
    template: str
    parameters: str
    modelfile: str = ""
    license: str = ""


class RunningModel(Struct, kw_only=True):
    name: str
    model: str
    size: int
    size_vram: int
    digest: str
    details: Details
    expires_at: str
    context_length: int


class RunningModels(Struct):
    models: list[RunningModel]


class PullRequest(ModelName, kw_only=True):
    """``POST /api/pull``: a catalog id or ``hf:OWNER/REPO[:QUANT]``, resolved as ``edge-run models pull`` does."""

    stream: bool = True
    insecure: bool = False


class Progress(Struct, kw_only=True, omit_defaults=True):
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class CopyRequest(Struct, kw_only=True):
    source: str
    destination: str


class Version(Struct):
    version: str
