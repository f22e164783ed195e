"""The access log: one line per request (JSON or text) in the user log folder, rotated.

It names the key by its *name* (never the key), and says the model, status, tokens, time to first
token and duration. ``GET /health`` and the web page's static files are not logged: the page polls
``/health`` every 2 seconds.
"""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path
from typing import Literal

import msgspec

__all__ = ["AccessLine", "AccessLog", "LogFormat"]

LogFormat = Literal["json", "text"]
MAX_BYTES = 10 << 20
BACKUPS = 5
_encoder = msgspec.json.Encoder()


class AccessLine(msgspec.Struct, kw_only=True, omit_defaults=True):
    time: str  # ISO 8601, UTC
    method: str
    path: str
    status: int
    duration_ms: float
    key: str | None = None  # the key's name
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    ttft_ms: float | None = None


class AccessLog:
    """``access.log`` in ``log_dir``, rotated at 10 MiB with 5 kept."""

    def __init__(self, log_dir: Path, fmt: LogFormat = "json") -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.path = log_dir / "access.log"
        self.format = fmt
        self._handler = logging.handlers.RotatingFileHandler(self.path, maxBytes=MAX_BYTES, backupCount=BACKUPS)
        self._handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, line: AccessLine) -> None:
        if self.format == "json":
            message = _encoder.encode(line).decode()
        else:
            tokens = f" tokens={line.prompt_tokens}+{line.completion_tokens}" if line.prompt_tokens is not None else ""
            named = (("key", line.key), ("model", line.model), ("ttft_ms", line.ttft_ms))
            extra = "".join(f" {k}={v}" for k, v in named if v is not None)
            message = f"{line.time} {line.method} {line.path} {line.status} {line.duration_ms:.0f}ms{tokens}{extra}"
        self._handler.emit(logging.LogRecord("edge_run.access", logging.INFO, "", 0, message, None, None))

    def close(self) -> None:
        self._handler.close()
