"""Ollama's API (``/api/*``): chat, generate, embed, and the model routes its clients call."""

from __future__ import annotations

__all__: list[str] = []
