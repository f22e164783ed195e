"""What the engine and its callers exchange: plain data, no llama.cpp."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from edge_run.engine.threads import CoreShare
    from edge_run.errors import EdgeRunError

__all__ = ["Chunk", "EngineOptions", "GpuDevice", "SamplerSpec", "ThoughtLimit", "TokenLogprob"]


@dataclass(frozen=True, slots=True)
class EngineOptions:
    ctx: int
    threads: int
    gpu_layers: int | None
    slots: int
    max_queue: int
    batch: int
    draft_max: int = 8  # drafted tokens per step at most (prompt lookup); 0: none
    reasoning_format: str = "auto"  # "none": the serving layer leaves a thinking model's thought in the content
    reasoning_budget: int = -1  # a thought's tokens at most, then it is closed; -1: no limit
    device_sampling: bool | None = None  # None: when the model is offloaded whole to a GPU
    chat_template: str | None = None  # a Jinja template that replaces the GGUF's own
    cores: CoreShare | None = None  # shared by every loaded model; None: this engine alone
    rpc_servers: tuple[str, ...] = ()  # llama.cpp rpc-server workers, offloaded to as GPUs are
    kind: str = "chat"  # "embedding" or "rerank": a model that only embeds or scores (no slots, no chat)
    pooling: str | None = None  # mean, cls, last or rank; None: the model's own (a chat model's: mean)
    mmproj: Path | None = None  # a multimodal projector: images and audio in (llama.cpp's mtmd)
    mmproj_offload: bool = True  # the projector on the GPU when the model is offloaded whole
    kernel_checks: Path | None = None  # where kernel checks' verdicts are kept (llama/kernels.py); None: not kept


@dataclass(slots=True)
class TokenLogprob:
    """One generated token with its log-probability and the most likely alternatives."""

    token: bytes
    logprob: float
    top: list[tuple[bytes, float]]


@dataclass(slots=True)
class Chunk:
    """What one step produced for one choice. ``finish_reason`` set means that choice is done."""

    index: int = 0
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    error: EdgeRunError | None = None
    stop: str | None = None  # the stop string that ended the choice (finish_reason "stop" without end-of-generation)
    drafts_accepted: int = 0  # so far in this choice: drafted tokens its sampler agreed with
    drafts_rejected: int = 0


@dataclass(frozen=True, slots=True)
class ThoughtLimit:
    """A thinking budget: after ``tokens`` of a thought, ``closing`` is written in place of what is sampled."""

    tokens: int
    open: str  # the tag that opens the thought ("<think>")
    close: str  # the tag that ends it ("</think>")
    closing: str  # what is written to end it ("\n</think>\n\n")
    opened: bool  # the prompt opened the thought


@dataclass(frozen=True, slots=True)
class SamplerSpec:
    """Sampling settings of one request, in llama.cpp's terms."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()
    grammar: str | None = None  # GBNF; the output must match it
    triggers: tuple[str, ...] = ()  # regular expressions: the grammar holds the output only from where one matches

    @property
    def offloadable(self) -> bool:
        """Whether llama.cpp can run this chain in the decode graph (every sampler used here but the grammar)."""
        return self.grammar is None


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """A GPU that llama.cpp can offload to, with its memory in bytes as the driver reports it now."""

    name: str  # ggml's name: CUDA0, Metal, Vulkan0...
    description: str  # the card: "NVIDIA H100 80GB HBM3", "Apple M2"...
    free: int
    total: int

    @property
    def label(self) -> str:
        return f"{self.name} {self.description}".strip()
