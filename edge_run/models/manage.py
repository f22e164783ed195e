"""The model files a running server changes through Ollama's API (pull, copy, delete), as ``edge-run models`` does.

The running registry is told apart (:meth:`ModelRegistry.add` and :meth:`ModelRegistry.remove`); this module only
touches what is on disk: the downloads, and the registered models' file.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from edge_run.models.inventory import pull_model, recorded_sha256, remove_model
from edge_run.models.local import LocalRegistry
from edge_run.models.registry import ModelSpec

if TYPE_CHECKING:
    from pathlib import Path

    from edge_run.config import ModelConfig
    from edge_run.models.progress import Board
    from edge_run.paths import Paths

__all__ = ["ModelFiles"]


class ModelFiles:
    """The user's models on disk: ``paths`` (edge-run's folders) and ``configs`` (the ``[[model]]`` tables).

    A plain class, not a dataclass: Litestar reads a dataclass's field types when it is a handler's dependency.
    """

    def __init__(self, paths: Paths, configs: list[ModelConfig]) -> None:
        self.paths = paths
        self.configs = configs

    def pull(self, name: str, board: Board) -> ModelSpec:
        """Download ``name`` (``hf:OWNER/REPO[:QUANT]`` or a catalog id), reporting to ``board``; see ``pull_model``."""
        return pull_model(name, self.paths, progress=board)

    def remove(self, model_id: str) -> list[Path]:
        """Forget a model as ``models rm`` does; raises ``ModelNotFound``, or ``ValueError`` for a ``[[model]]``."""
        return remove_model(model_id, self.paths, self.configs)

    def copy(self, spec: ModelSpec, new_id: str) -> ModelSpec:
        """Register ``spec``'s file under ``new_id`` too (its file is kept when either is removed)."""
        sha256 = recorded_sha256(spec, self.paths) or ""
        mmproj = str(spec.mmproj) if spec.mmproj is not None else ""
        local = LocalRegistry(self.paths.registry_file).add(new_id, spec.path, sha256=sha256, mmproj=mmproj)
        return ModelSpec(local.id, spec.path, "local", mmproj=spec.mmproj)

    def digest(self, spec: ModelSpec) -> str:
        """The file's sha256 when it was recorded at download; else a stable hash of its path, size and time."""
        recorded = recorded_sha256(spec, self.paths)
        if recorded:
            return recorded
        try:
            stat = spec.path.stat()
        except OSError:
            return ""
        return hashlib.sha256(f"{spec.path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
