"""``GET /v1/library``: the catalog's models with their capabilities, size, memory estimate and this machine's verdict.

The estimates come from the header cache that ``edge-run models search`` fills: a request never reaches the network.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from litestar import get
from litestar.di import NamedDependency

from edge_run.models.library import Library, LibraryRow

__all__ = ["LibraryList", "list_library"]


class LibraryList(msgspec.Struct, frozen=True):
    """Every library model; ``kv_known`` false: its memory is the file's alone (no header cached yet)."""

    data: list[LibraryRow]
    object: Literal["list"] = "list"


@get("/library", sync_to_thread=True, summary="The models one can pull, with memory estimates and what fits here")
def list_library(library: NamedDependency[Library | None]) -> LibraryList:
    return LibraryList(data=library.rows() if library is not None else [])
