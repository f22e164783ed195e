"""Upstream engines (vLLM, llama-server, another edge-run, a hosted service) behind local model ids."""

from __future__ import annotations

__all__: list[str] = []
