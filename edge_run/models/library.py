"""The library: the catalog's models as a list to choose from, each with the memory it needs and whether it fits.

A model needs its file plus the KV cache of ``ctx x slots`` tokens (an embedder or a reranker: its batch's
tokens). The KV cache's bytes per token come from the GGUF header, read over the network once
(:mod:`.hub`) and kept on disk (:class:`HeaderCache`); without it, the verdict is from the file size alone.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from edge_run.atomic import write_atomically
from edge_run.gguf import GgufLayout

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from edge_run.models.catalog import Catalog, CatalogEntry

__all__ = [
    "FITS_GPU",
    "FITS_RAM",
    "TOO_BIG",
    "HeaderCache",
    "Library",
    "LibraryRow",
    "Machine",
    "Sizing",
    "kv_tokens",
    "library_rows",
    "matches",
]

FITS_GPU, FITS_RAM, TOO_BIG = "fits on GPU", "fits in RAM", "too big"
CTX_STEP = 256  # the largest context that fits is given in steps of this many tokens

_headers = msgspec.json.Decoder(dict[str, GgufLayout])
_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Machine:
    """What loaded models may take here, in bytes: of RAM, and of free GPU memory (0: no GPU)."""

    ram: int
    gpu: int = 0


@dataclass(frozen=True, slots=True)
class Sizing:
    """The context, slots and batch a model would be served with."""

    ctx: int = 4096
    slots: int = 4
    batch: int = 512


class LibraryRow(msgspec.Struct, frozen=True, kw_only=True):
    """One library model, what it needs at ``ctx`` tokens per slot, and this machine's verdict."""

    id: str
    name: str
    description: str
    capabilities: list[str]
    ollama: list[str]
    params: int
    size: int  # bytes of the model file
    size_approx: bool
    context: int  # trained context
    license: str
    repo: str | None  # None: fetched from a package index
    ctx: int  # tokens per slot the memory is for
    memory: int  # bytes: the file, plus the KV cache when the header is known
    kv_known: bool  # False: the header was never read, so the memory is the file's alone
    verdict: str  # fits on GPU, fits in RAM, too big
    max_ctx: int | None  # too big: the largest ctx per slot that fits (0: not even the weights); None unknown


def kv_tokens(kind: str, sizing: Sizing) -> int:
    """Tokens of KV cache a model holds: every slot's context for a chat model, one batch for an embedder or a
    reranker (they keep no slots)."""
    return sizing.ctx * sizing.slots if kind == "chat" else max(sizing.batch, sizing.ctx)


class HeaderCache:
    """GGUF headers of library files by ``repo/file``, in one JSON file rewritten atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, GgufLayout]:
        with contextlib.suppress(OSError, msgspec.DecodeError):
            return _headers.decode(self.path.read_bytes())
        return {}

    def get(self, entry: CatalogEntry) -> GgufLayout | None:
        return self.load().get(_key(entry))

    def put(self, entry: CatalogEntry, layout: GgufLayout) -> None:
        write_atomically(self.path, _encoder.encode({**self.load(), _key(entry): layout}))


def _key(entry: CatalogEntry) -> str:
    return f"{entry.source.repo}/{entry.source.file}" if entry.source else f"{entry.id}/{entry.file}"


def matches(entry: CatalogEntry, text: str = "", capability: str = "") -> bool:
    """Whether ``text`` is in the entry's id, name, Ollama names or description, and it has ``capability``."""
    haystack = " ".join([entry.id, entry.name, *entry.ollama, entry.description]).lower()
    return text.lower() in haystack and (not capability or capability in entry.capabilities)


def _kind(entry: CatalogEntry) -> str:
    return next((c for c in ("embedding", "rerank") if c in entry.capabilities), "chat")


def fit(entry: CatalogEntry, layout: GgufLayout | None, machine: Machine, sizing: Sizing) -> LibraryRow:
    """The entry's row: memory at ``sizing``, and whether that fits the GPU, else RAM, else how much context does."""
    tokens = kv_tokens(_kind(entry), sizing)
    memory = entry.size + (layout.kv_bytes(tokens) if layout is not None else 0)
    max_ctx: int | None = None
    if machine.gpu and memory <= machine.gpu:
        verdict = FITS_GPU
    elif memory <= machine.ram:
        verdict = FITS_RAM
    else:
        verdict = TOO_BIG
        if layout is not None:
            per_ctx = layout.kv_bytes(sizing.slots if _kind(entry) == "chat" else 1)
            room = max(machine.ram, machine.gpu) - entry.size
            max_ctx = max(0, room // max(per_ctx, 1)) // CTX_STEP * CTX_STEP
    return LibraryRow(
        id=entry.id,
        name=entry.name or entry.id,
        description=entry.description,
        capabilities=list(entry.capabilities),
        ollama=list(entry.ollama),
        params=entry.params,
        size=entry.size,
        size_approx=entry.size_approx,
        context=entry.context,
        license=entry.license,
        repo=entry.source.repo if entry.source else None,
        ctx=sizing.ctx,
        memory=memory,
        kv_known=layout is not None,
        verdict=verdict,
        max_ctx=max_ctx,
    )


def library_rows(
    catalog: Catalog,
    cache: HeaderCache,
    machine: Machine,
    sizing: Sizing,
    *,
    entries: Iterable[CatalogEntry] | None = None,
    read_header: Callable[[CatalogEntry], GgufLayout | None] | None = None,
) -> list[LibraryRow]:
    """A row for each of ``entries`` (default: the whole catalog), headers from ``cache``.

    ``read_header`` reads a header the cache lacks (over the network) and may return None; what it reads is
    cached. Without it, nothing but the cache is read: what a request handler may do.
    """
    known = cache.load()
    rows = []
    for entry in catalog.model if entries is None else entries:
        layout = known.get(_key(entry))
        if layout is None and read_header is not None:
            layout = read_header(entry)
            if layout is not None:
                cache.put(entry, layout)
        rows.append(fit(entry, layout, machine, sizing))
    return rows


class Library:
    """The library as a running server shows it (``GET /v1/library``): from the header cache only, never the
    network, judged against this machine as it was at start-up."""

    def __init__(self, catalog: Catalog, cache: HeaderCache, machine: Machine, sizing: Sizing) -> None:
        self.catalog, self.cache, self.machine, self.sizing = catalog, cache, machine, sizing

    def rows(self) -> list[LibraryRow]:
        return library_rows(self.catalog, self.cache, self.machine, self.sizing)
