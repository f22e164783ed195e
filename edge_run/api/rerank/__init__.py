"""The rerank wire format (Jina's and Cohere's, as llama-server serves it): ``POST /v1/rerank`` and ``/rerank``."""

from __future__ import annotations

__all__: list[str] = []
