"""Where edge-run keeps its files. The only module that imports platformdirs.

``EDGE_RUN_HOME`` relocates everything under one folder (tests point it at a temp dir), and
``EDGE_RUN_KERNEL_CHECKS`` the file of kernel checks (the suite shares one between its servers).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

__all__ = ["Paths", "hf_cache_in"]

APP = "edge-run"


@dataclass(frozen=True, slots=True)
class Paths:
    """The folders edge-run reads and writes."""

    config_dir: Path
    data_dir: Path
    log_dir: Path
    checks_file: Path | None = None  # EDGE_RUN_KERNEL_CHECKS

    @classmethod
    def resolve(cls, environ: dict[str, str] | None = None) -> Paths:
        env = os.environ if environ is None else environ
        home = env.get("EDGE_RUN_HOME")
        checks = Path(env["EDGE_RUN_KERNEL_CHECKS"]).expanduser() if env.get("EDGE_RUN_KERNEL_CHECKS") else None
        if home:
            root = Path(home).expanduser()
            return cls(root / "config", root / "data", root / "logs", checks)
        return cls(
            config_dir=Path(platformdirs.user_config_dir(APP, appauthor=False)),
            data_dir=Path(platformdirs.user_data_dir(APP, appauthor=False)),
            log_dir=Path(platformdirs.user_log_dir(APP, appauthor=False)),
            checks_file=checks,
        )

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def keys_db(self) -> Path:
        """API keys (hashed) and their usage records."""
        return self.config_dir / "keys.sqlite3"

    @property
    def keys_file(self) -> Path:
        """Where keys were kept before the SQLite store; moved into it on first use."""
        return self.config_dir / "keys.json"

    @property
    def registry_file(self) -> Path:
        return self.config_dir / "models.json"

    @property
    def kernel_checks(self) -> Path:
        """Whether this CPU's kernels compute rows alike, by model (``engine/llama/kernels.py``): checked once."""
        return self.checks_file or self.data_dir / "kernel-checks.json"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def hf_cache(self) -> Path:
        """Models pulled from Hugging Face, in huggingface_hub's cache layout."""
        return hf_cache_in(self.models_dir)

    @property
    def library_cache(self) -> Path:
        """The GGUF headers of library models, read over the network once (``models search``)."""
        return self.models_dir / "library-headers.json"


def hf_cache_in(models_dir: Path) -> Path:
    """Where pulls from Hugging Face go in a models folder."""
    return models_dir / "huggingface"
