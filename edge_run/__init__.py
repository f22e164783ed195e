"""edge-run: an OpenAI-compatible chat endpoint on your own machine."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
