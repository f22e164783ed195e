"""The user's own GGUF files, registered by id (``edge-run models add PATH --id ID``), and model lookup.

The registry is a small JSON file at :attr:`Paths.registry_file`, rewritten atomically.
"""

from __future__ import annotations

import builtins
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from edge_run.atomic import write_atomically
from edge_run.errors import EngineFailure
from edge_run.gguf import read_layout

if TYPE_CHECKING:
    pass

__all__ = ["GGUF_MAGIC", "MODEL_ID_RE", "LocalModel", "LocalRegistry", "check_gguf"]

# Segments separated by "/" so that namespaced ids (`owner/name`) work as they do for OpenAI clients.
MODEL_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*(/[A-Za-z0-9][A-Za-z0-9._:-]*)*$")
GGUF_MAGIC = b"GGUF"


class LocalModel(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A registered GGUF: its id, absolute path, and when it was added (Unix seconds).

    Pulled models (``source="hf"``) also say where they came from, their hash, and every file
    edge-run downloaded for them (split GGUFs have several), which ``models rm`` deletes.
    """

    id: str
    path: str
    added: int
    source: str = "local"
    origin: str = ""  # hf:OWNER/REPO/FILE@COMMIT
    sha256: str = ""
    downloaded: list[str] = []  # files edge-run downloaded (and may delete)
    mmproj: str = ""  # a multimodal projector GGUF beside it: images (and audio) in


class _RegistryFile(msgspec.Struct, forbid_unknown_fields=True):
    models: list[LocalModel] = msgspec.field(default_factory=list)


_decoder = msgspec.json.Decoder(_RegistryFile)
_encoder = msgspec.json.Encoder()


def check_gguf(path: Path) -> Path:
    """The resolved path of a GGUF file; ValueError if it is missing or not a GGUF."""
    resolved = path.expanduser().resolve()
    if not resolved.is_file():
        raise ValueError(f"{path}: no such file")
    with resolved.open("rb") as f:
        if f.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file (it does not start with {GGUF_MAGIC!r})")
    try:
        read_layout(resolved)  # a corrupt header or a truncated file is refused now, not at load
    except EngineFailure as exc:
        raise ValueError(f"{path} is a broken GGUF file: {exc.message}") from None
    return resolved


class LocalRegistry:
    """The user's registered GGUFs, stored as JSON at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def add(self, model_id: str, gguf_path: Path | str, **pulled: Any) -> LocalModel:
        """Register ``gguf_path`` as ``model_id``, replacing any model with that id.

        ``pulled`` fills a pulled model's other fields (``source``, ``origin``, ``sha256``, ``downloaded``).

        Raises:
            ValueError: the id is malformed, or the file is missing or not a GGUF.
        """
        if not MODEL_ID_RE.fullmatch(model_id):
            raise ValueError(
                f"invalid model id {model_id!r}: use letters, digits and . _ : - "
                "(not first), optionally in segments separated by '/'"
            )
        resolved = check_gguf(Path(gguf_path))
        model = LocalModel(id=model_id, path=str(resolved), added=int(time.time()), **pulled)
        others = [m for m in self._load() if m.id != model_id]
        self._save([*others, model])
        return model

    def remove(self, model_id: str) -> LocalModel | None:
        """Unregister ``model_id`` (its files are left alone); the entry removed, or None."""
        models = self._load()
        kept = [m for m in models if m.id != model_id]
        if len(kept) == len(models):
            return None
        self._save(kept)
        return next(m for m in models if m.id == model_id)

    def list(self) -> builtins.list[LocalModel]:
        """All registered models, by id."""
        return sorted(self._load(), key=lambda m: m.id)

    def get(self, model_id: str) -> LocalModel | None:
        return next((m for m in self._load() if m.id == model_id), None)

    def _load(self) -> builtins.list[LocalModel]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            return _decoder.decode(data).models
        except msgspec.DecodeError as exc:
            raise ValueError(f"{self.path} is not a valid model registry: {exc}") from None

    def _save(self, models: builtins.list[LocalModel]) -> None:
        write_atomically(self.path, _encoder.encode(_RegistryFile(sorted(models, key=lambda m: m.id))))
