"""HTTP plumbing every route shares: auth, the Host check, accounting, errors, server-sent events, logs, metrics."""

from __future__ import annotations

__all__: list[str] = []
