"""The model registry of a running server: the model id a client names, to its engine."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from edge_run.errors import ModelNotFound

if TYPE_CHECKING:
    from edge_run.engine.engine import Engine

__all__ = ["Registry"]


class Registry:
    """Served models by id. An unknown id is an error, never a silent fallback to another model."""

    def __init__(self, engines: list[Engine]) -> None:
        self._engines = {e.model_id: e for e in engines}

    def get(self, model_id: str) -> Engine:
        engine = self._engines.get(model_id)
        if engine is None:
            raise ModelNotFound(model_id)
        return engine

    def __iter__(self) -> Iterator[Engine]:
        return iter(self._engines.values())
