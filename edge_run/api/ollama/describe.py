"""A model as Ollama's API describes it: ``details``, ``model_info`` and ``capabilities``, from its GGUF header."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from edge_run.api.ollama.schemas import Details
from edge_run.errors import EngineFailure
from edge_run.gguf import read_layout
from edge_run.serving.reasoning import think_format

if TYPE_CHECKING:
    from edge_run.gguf import GgufLayout
    from edge_run.models.registry import ModelSpec

__all__ = ["capabilities", "details", "layout_of", "model_info", "modified_at", "rfc3339", "template_of"]


def layout_of(spec: ModelSpec) -> GgufLayout | None:
    """The GGUF header, or None for a file that is gone or broken (it is still listed)."""
    try:
        return read_layout(spec.path)
    except EngineFailure:
        return None


def _size_label(n_params: int) -> str:
    """Ollama's ``parameter_size``: ``135.0M``, ``8.0B``."""
    if n_params >= 1_000_000_000:
        return f"{n_params / 1e9:.1f}B"
    return f"{n_params / 1e6:.1f}M"


def details(layout: GgufLayout | None) -> Details:
    if layout is None:
        return Details(format="gguf", family="", families=[], parameter_size="", quantization_level="")
    arch = layout.architecture
    return Details(
        format="gguf",
        family=arch,
        families=[arch],
        parameter_size=_size_label(layout.n_params),
        quantization_level=layout.quant,
    )


def model_info(layout: GgufLayout | None, spec: ModelSpec) -> dict[str, Any]:
    """The header's keys Ollama's clients read (``{arch}.context_length`` sizes their windows)."""
    if layout is None:
        return {}
    arch = layout.architecture
    return {
        "general.architecture": arch,
        "general.name": layout.name,
        "general.parameter_count": layout.n_params,
        "general.file_type": layout.file_type,
        f"{arch}.context_length": spec.ctx or layout.context_length,
        f"{arch}.embedding_length": layout.n_embd,
        f"{arch}.block_count": layout.n_layer,
        "tokenizer.ggml.tokens_count": layout.n_vocab,
    }


def template_of(layout: GgufLayout | None, spec: ModelSpec) -> str:
    """The chat template the model is served with: its ``[[model]]`` table's, else the GGUF's (Jinja)."""
    return spec.chat_template or (layout.chat_template if layout is not None else "")


def capabilities(layout: GgufLayout | None, spec: ModelSpec) -> list[str]:
    """Ollama's names for what the model serves: a chat model completes, calls tools (natively, or held by a
    grammar when its template has none) and thinks when its template does; an embedder embeds."""
    out: list[str] = []
    if "chat" in spec.capabilities:
        out += ["completion", "tools"]
        if think_format(template_of(layout, spec)) is not None:
            out.append("thinking")
    if spec.kind == "embedding":
        out.append("embedding")
    return out


_LAST = 253_402_300_799  # 9999-12-31T23:59:59Z: a keep-alive of 10^16 seconds expires no later than this


def rfc3339(seconds: float) -> str:
    """A Unix time as Ollama writes times (RFC 3339, UTC), no later than the last second of year 9999."""
    return dt.datetime.fromtimestamp(min(seconds, _LAST), dt.UTC).isoformat().replace("+00:00", "Z")


def modified_at(spec: ModelSpec) -> str:
    try:
        return rfc3339(spec.path.stat().st_mtime)
    except OSError:
        return rfc3339(0)
