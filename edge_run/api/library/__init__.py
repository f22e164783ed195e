"""edge-run's own library route: ``GET /v1/library``, the models one can pull and whether each fits here."""

from __future__ import annotations

__all__: list[str] = []
