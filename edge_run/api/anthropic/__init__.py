"""Anthropic's Messages API."""

from __future__ import annotations

__all__: list[str] = []
