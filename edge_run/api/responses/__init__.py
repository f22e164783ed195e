"""OpenAI's Responses API: create, stream, store and continue responses."""

from __future__ import annotations

__all__: list[str] = []
