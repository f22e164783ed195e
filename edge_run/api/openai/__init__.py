"""OpenAI's wire format: chat completions, completions, embeddings and models."""

from __future__ import annotations

__all__: list[str] = []
