"""The web page (a chat UI) and its one-time login exchange."""

from __future__ import annotations

__all__: list[str] = []
