"""Images and audio in a prompt, as the scheduler sees them: spans of the token list whose rows are embeddings.

A media chunk of ``n`` rows stands in the prompt as ``n`` negative ids made from a hash of its decoded pixels (or
samples) and the row's place (:func:`media_ids`). So the prefix cache, which compares ids, reuses an image's KV
in the next turn of a conversation about it, as it reuses text, and never an image for another one; and
``cached_tokens`` counts its rows. The embeddings are computed (:meth:`MediaSpan.embeddings`) only when a
block first needs them: a cached image is never encoded again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

__all__ = [
    "MEDIA_MARKER",
    "MediaInput",
    "MediaSpan",
    "media_ids",
    "position",
    "rows_at",
    "runs",
    "unencoded",
    "whole_spans",
]

# Where a media input goes in the rendered prompt: llama.cpp's mtmd_default_marker(), which mtmd_tokenize cuts at
MEDIA_MARKER = "<__media__>"


@dataclass(frozen=True, slots=True)
class MediaInput:
    """An image or audio file as a request sent it (PNG, JPEG... WAV, MP3), in the order of the prompt's markers."""

    kind: str  # "image" or "audio"
    data: bytes
    param: str  # the request field it came in, named in errors
    url: str = ""  # an image to fetch first (``--allow-image-urls``): ``data`` is empty until then


@dataclass(eq=False)
class MediaSpan:
    """One media chunk of a tokenized prompt: rows ``start`` to ``start + n`` of its token list."""

    start: int
    n: int
    kind: str
    encode: Callable[[int], np.ndarray]  # (n, n_embd) float32, on that many threads (0: the projector's own count)
    whole: bool = False  # one llama_decode (every chunk that fits a batch; Gemma 3's and M-RoPE's must)
    causal: bool = True  # False: causal attention off while it decodes (Gemma 3)
    n_pos: int = -1  # the positions it takes: fewer than its rows where M-RoPE lays an image out on a grid
    layout: Callable[[int], np.ndarray] | None = None  # M-RoPE: its rows' (4, n) positions from its first one
    _embd: np.ndarray | None = field(default=None, repr=False)
    error: Exception | None = field(default=None, repr=False)  # its encode failed (beside the engine thread)

    def __post_init__(self) -> None:
        if self.n_pos < 0:
            self.n_pos = self.n

    def embeddings(self, threads: int = 0) -> np.ndarray:
        """The chunk's rows, encoded on first use (on ``threads`` threads)."""
        if self._embd is None:
            self._embd = self.encode(threads)
        return self._embd

    @property
    def encoded(self) -> bool:
        return self._embd is not None


def media_ids(key: int, n: int) -> list[int]:
    """The ids of a media chunk's ``n`` rows: negative, from ``key`` (a 64-bit hash of its content) and the row."""
    return [-((key << 20) + i + 1) for i in range(n)]


def unencoded(spans: list[MediaSpan], start: int, end: int) -> MediaSpan | None:
    """The first span among prompt rows ``start`` to ``end`` that is not encoded yet, if any."""
    return next((s for s in spans if not s.encoded and s.start < end and s.start + s.n > start), None)


def whole_spans(spans: list[MediaSpan]) -> tuple[tuple[int, int], ...]:
    """The rows ``(start, end)`` of each span that one ``llama_decode`` must hold whole."""
    return tuple((s.start, s.start + s.n) for s in spans if s.whole)


def position(spans: list[MediaSpan], i: int) -> int:
    """The KV position of prompt row ``i`` (not inside a span): ``i`` less the rows that spans before it save."""
    return i - sum(s.n - s.n_pos for s in spans if s.start + s.n <= i)


def rows_at(spans: list[MediaSpan], start: int, n: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The embeddings of prompt rows ``start`` to ``start + n``, all of them one span's media rows, and, with M-RoPE,
    their positions (4, n)."""
    span = next(s for s in spans if s.start <= start < s.start + s.n)
    a, b = start - span.start, start - span.start + n
    assert b <= span.n, f"media rows {start}..{start + n} are not all in one chunk"
    positions = span.layout(position(spans, span.start))[:, a:b] if span.layout is not None else None
    return span.embeddings()[a:b], positions


def runs(tokens: list[int]) -> list[tuple[int, int, bool]]:
    """``tokens`` as consecutive runs ``(start, end, media)`` of text ids and of each media chunk's ids (a chunk's
    rows are consecutive ids, see :func:`media_ids`)."""
    out: list[tuple[int, int, bool]] = []
    start = 0
    for i in range(1, len(tokens) + 1):
        new_chunk = i < len(tokens) and tokens[i] < 0 and tokens[i] != tokens[i - 1] - 1
        if i == len(tokens) or (tokens[i] < 0) != (tokens[start] < 0) or new_chunk:
            out.append((start, i, tokens[start] < 0))
            start = i
    return out
