"""API keys: the store (:mod:`.store`), per-key limits (:mod:`.limits`) and usage records (:mod:`.usage`)."""

from __future__ import annotations

from edge_run.keys.store import KeyRecord, KeyStore, KeyStoreError

__all__ = ["KeyRecord", "KeyStore", "KeyStoreError"]
