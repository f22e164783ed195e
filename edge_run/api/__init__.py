"""The HTTP layer: the app, its dependencies, the relay to upstreams, and one package per wire format."""

from __future__ import annotations

__all__: list[str] = []
