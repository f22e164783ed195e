"""Embedding and rerank requests checked against their model, before it loads; their answers shaped.

Shared by every wire format that embeds or reranks: what a request may ask depends on the model's spec
(its kind, its Matryoshka sizes, its instruction prefixes), which the registry knows without loading it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_run.errors import InvalidRequest

if TYPE_CHECKING:
    from edge_run.models.registry import ModelSpec

__all__ = ["Ranked", "check_dimensions", "embedding_inputs", "ranked", "shortened"]


def embedding_inputs(
    raw: str | list[Any], input_type: str | None, spec: ModelSpec | None
) -> list[str] | list[list[int]]:
    """The texts (with the model's instruction prefix when ``input_type`` asks for one) or token arrays to embed.

    ``raw`` is OpenAI's ``input``: a string, strings, one token array (integers) or token arrays. ``spec`` is
    None for an upstream model, which gets the request as it is.
    """
    items = [raw] if isinstance(raw, str) else raw
    if all(isinstance(x, str) for x in items):
        for i, text in enumerate(items):
            if not text:
                raise InvalidRequest(f"input[{i}] is an empty string", param="input")
        prefix = _prefix(input_type, spec) if spec is not None else ""
        return [prefix + text for text in items]
    if input_type is not None:
        raise InvalidRequest("`input_type` applies to texts, not token arrays", param="input_type")
    if all(isinstance(x, int) for x in items):
        return [list(items)]
    if all(isinstance(x, list) for x in items):
        for i, ids in enumerate(items):
            if not ids:
                raise InvalidRequest(f"input[{i}] is an empty token array", param="input")
        return [list(ids) for ids in items]
    raise InvalidRequest("`input` mixes texts, token ids and token arrays; send one kind", param="input")


def _prefix(input_type: str | None, spec: ModelSpec) -> str:
    if input_type is None:
        return ""
    prefix = spec.query_prefix if input_type == "query" else spec.document_prefix
    if not prefix:
        raise InvalidRequest(
            f"model `{spec.id}` has no known {input_type} prefix: add it to the text, or set "
            f"`{input_type}_prefix` in its [[model]] table",
            param="input_type",
        )
    return prefix


def check_dimensions(dimensions: int | None, spec: ModelSpec | None) -> None:
    """``dimensions`` only for a Matryoshka-trained embedder, within the sizes it was trained at."""
    if dimensions is None or spec is None:
        return
    if not spec.dimensions:
        raise InvalidRequest(
            f"model `{spec.id}` is not Matryoshka-trained: its vectors cannot be shortened "
            "(a [[model]] table's `dimensions` lists the sizes of one that is)",
            param="dimensions",
        )
    low, high = min(spec.dimensions), max(spec.dimensions)
    if not low <= dimensions <= high:
        raise InvalidRequest(f"`dimensions` must be from {low} to {high} for `{spec.id}`", param="dimensions")


def shortened(vector: np.ndarray, dimensions: int | None) -> np.ndarray:
    """A unit vector cut to its first ``dimensions`` and made unit length again (Matryoshka)."""
    if dimensions is None or dimensions >= len(vector):
        return vector
    head = vector[:dimensions]
    return head / (float(np.linalg.norm(head)) or 1.0)


@dataclass(frozen=True, slots=True)
class Ranked:
    index: int
    score: float


def ranked(scores: list[float], top_n: int | None) -> list[Ranked]:
    """Documents by score, highest first (ties keep their order), the first ``top_n`` of them."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return [Ranked(i, scores[i]) for i in order[: top_n if top_n is not None else len(order)]]
