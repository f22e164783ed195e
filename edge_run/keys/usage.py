"""Usage records: one per request (key, model, tokens, status, duration), written in batches, and their totals.

Requests append to a list in memory; a background task writes what gathered once a second (or at
``BATCH`` records) in one transaction, on a worker thread, so no request waits on the disk and nothing
is synced per token. Totals read the database plus what is not written yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Literal

import msgspec

if TYPE_CHECKING:
    from edge_run.keys.store import KeyStore

__all__ = ["BY", "UsageLog", "UsageRecord", "UsageRow", "since_seconds"]

log = logging.getLogger(__name__)

FLUSH_EVERY = 1.0  # seconds
BATCH = 256
By = Literal["day", "model", "key"]
BY: tuple[By, ...] = ("day", "model", "key")
_GROUP = {"day": "date(ts, 'unixepoch', 'localtime')", "model": "model", "key": "key"}


class UsageRecord(msgspec.Struct, frozen=True):
    ts: float
    key: str
    model: str
    route: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    status: int
    duration_ms: int
    reasoning_tokens: int = 0  # of the completion tokens, those of a thinking model's thought


class UsageRow(msgspec.Struct, frozen=True, kw_only=True):
    """Totals of one group (a day, a model or a key), and of one key within it when split by key.

    Also the rows of ``GET /v1/usage``.
    """

    group: str  # the day (YYYY-MM-DD, local time), model or key
    key: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int  # prompt and completion
    reasoning_tokens: int = 0  # of the completion tokens, those of thoughts


class UsageLog:
    """Records requests to the key database, in batches."""

    def __init__(self, store: KeyStore) -> None:
        self._store = store
        self._pending: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def add(self, record: UsageRecord) -> None:
        self._pending.append(record)
        if len(self._pending) >= BATCH:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_EVERY)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await asyncio.to_thread(self._write, batch)
        except Exception:  # a full disk must not stop the server; the records are lost, and said so
            log.exception("could not write %d usage records", len(batch))

    def _write(self, batch: list[UsageRecord]) -> None:
        with self._store.transaction() as conn:
            conn.executemany(
                "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [msgspec.structs.astuple(r) for r in batch]
            )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    # -- reading ---------------------------------------------------------------------

    def tokens_since(self, key: str, since: float) -> int:
        """Prompt and completion tokens of ``key``'s requests since ``since`` (Unix time)."""
        row = (
            self._store.connect()
            .execute(
                "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage WHERE key = ? AND ts >= ?",
                (key, since),
            )
            .fetchone()
        )
        pending = sum(r.prompt_tokens + r.completion_tokens for r in self._pending if r.key == key and r.ts >= since)
        return int(row[0]) + pending

    def last_used(self) -> dict[str, float]:
        """Each key's latest request (Unix time)."""
        rows = self._store.connect().execute("SELECT key, MAX(ts) FROM usage GROUP BY key").fetchall()
        last = {key: float(ts) for key, ts in rows}
        for r in self._pending:
            last[r.key] = max(last.get(r.key, 0.0), r.ts)
        return last

    def totals(
        self, *, since: float, by: By = "day", key: str | None = None, split_keys: bool = False
    ) -> list[UsageRow]:
        """Totals since ``since`` grouped ``by`` day (local), model or key; only ``key``'s when given.

        ``split_keys`` also splits each group by key (the web page's bars: tokens per day per key).
        """
        group = _GROUP[by]
        args: list[float | str]
        per_key = "key" if split_keys or by == "key" else "''"
        where, args = "ts >= ?", [since]
        if key is not None:
            where += " AND key = ?"
            args.append(key)
        rows = (
            self._store.connect()
            .execute(
                f"SELECT {group}, {per_key}, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), "
                f"SUM(reasoning_tokens) FROM usage WHERE {where} GROUP BY 1, 2 ORDER BY 1, 2",
                args,
            )
            .fetchall()
        )
        return [
            UsageRow(
                group=str(g),
                key=str(k),
                requests=int(n),
                prompt_tokens=int(p),
                completion_tokens=int(c),
                cached_tokens=int(x),
                total_tokens=int(p) + int(c),
                reasoning_tokens=int(r),
            )
            for g, k, n, p, c, x, r in rows
        ]


def since_seconds(text: str, now: float | None = None) -> float:
    """``7d``, ``12h``, ``30m`` before now, as a Unix time; ValueError otherwise."""
    units = {"d": 86400, "h": 3600, "m": 60}
    text = text.strip().lower()
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise ValueError(f"{text!r}: give a duration such as 7d, 12h or 30m")
    return (time.time() if now is None else now) - int(text[:-1]) * units[text[-1]]
