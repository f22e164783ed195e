"""The wire schemas of the library's routes: pulls (``/v1/library/pulls``) and a model's load, unload and delete."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

__all__ = ["ModelDeleted", "PullEvent", "PullList", "PullStart", "PullState"]


class PullStart(msgspec.Struct, frozen=True):
    """``POST /v1/library/pulls``: a library id, an Ollama name (``qwen3:4b``) or ``hf:OWNER/REPO[:QUANT]``."""

    model: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class PullEvent(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """One server-sent event of a pull: ``downloading`` (a file's bytes ``completed`` of ``total``, null when not
    known), then one of ``success`` (``model``: the id it is served under), ``error`` or ``cancelled``."""

    status: Literal["downloading", "success", "error", "cancelled"]
    file: str | None = None
    completed: int | None = None
    total: int | None = None
    model: str | None = None
    error: str | None = None


class ModelDeleted(msgspec.Struct, frozen=True):
    """``DELETE /v1/models/{id}``: the model is no longer offered, and its downloaded files are gone."""

    id: str
    object: Literal["model"] = "model"
    deleted: bool = True


class PullState(msgspec.Struct, frozen=True):
    """A pull under way: the model as the library or ``hf:`` names it, and each file's progress so far."""

    model: str
    files: list[PullEvent]


class PullList(msgspec.Struct, frozen=True):
    """``GET /v1/library/pulls``: the pulls under way (a page that reloads follows them again by posting)."""

    data: list[PullState]
    object: Literal["list"] = "list"
