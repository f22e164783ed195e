"""Per-key limits with a fake clock: windows, headers, parallel places, daily tokens from the usage records."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edge_run.errors import RateLimited
from edge_run.keys import KeyRecord, KeyStore
from edge_run.keys.limits import Limiter
from edge_run.keys.usage import UsageLog, UsageRecord
from tests.fakes import FakeClock


def key(**limits: int) -> KeyRecord:
    return KeyRecord(name="k", prefix="er-k", sha256="0" * 64, created=0, **limits)


def test_rpm_refuses_the_request_past_the_limit_until_the_minute_moves_on():
    clock = FakeClock()
    limiter = Limiter(clock=clock)
    k = key(rpm=2)
    first = limiter.admit(k, "/v1/chat/completions")
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    clock.now += 10
    limiter.admit(k, "/v1/chat/completions")
    with pytest.raises(RateLimited) as refused:
        limiter.admit(k, "/v1/chat/completions")
    assert refused.value.status == 429 and refused.value.type == "requests"
    assert refused.value.retry_after == 50  # the first request leaves the window in 50 s
    assert refused.value.headers["x-ratelimit-reset-requests"] == "50s"
    clock.now += 50
    assert limiter.admit(k, "/v1/chat/completions").headers["x-ratelimit-remaining-requests"] == "0"  # 2nd + this


def test_tpm_counts_tokens_as_they_are_spent_and_frees_them_a_minute_later():
    clock = FakeClock()
    limiter = Limiter(clock=clock)
    k = key(tpm=100)
    lease = limiter.admit(k, "/v1/chat/completions")
    lease.spend(30)
    for _ in range(80):  # a streamed answer, a token at a time
        lease.spend(1)
    lease.finish(200)
    with pytest.raises(RateLimited) as refused:
        limiter.admit(k, "/v1/chat/completions")
    assert refused.value.type == "tokens"
    assert refused.value.headers["x-ratelimit-remaining-tokens"] == "0"
    clock.now += 61
    assert limiter.admit(k, "/x").headers["x-ratelimit-remaining-tokens"] == "100"


def test_max_parallel_is_exact_and_a_finished_request_frees_its_place():
    limiter = Limiter(clock=FakeClock())
    k = key(max_parallel=2)

    async def burst() -> tuple[int, int]:
        async def one() -> bool:
            try:
                lease = limiter.admit(k, "/v1/chat/completions")
            except RateLimited:
                return False
            await asyncio.sleep(0.05)
            lease.finish(200)
            return True

        results = await asyncio.gather(*(one() for _ in range(10)))
        return sum(results), len(results) - sum(results)

    assert asyncio.run(burst()) == (2, 8)
    lease = limiter.admit(k, "/x")
    lease.finish(200)
    lease.finish(200)  # once only: a second end frees nothing more
    limiter.admit(k, "/x")
    limiter.admit(k, "/x")
    with pytest.raises(RateLimited):
        limiter.admit(k, "/x")


def test_daily_tokens_start_from_the_usage_records(tmp_path: Path):
    store = KeyStore(tmp_path / "keys.sqlite3")
    usage = UsageLog(store)
    clock = FakeClock()
    usage._write([UsageRecord(clock.now - 60, "k", "m", "/v1/chat/completions", 400, 150, 0, 200, 10)])
    limiter = Limiter(usage, clock=clock)
    with pytest.raises(RateLimited) as refused:
        limiter.admit(key(daily_tokens=500), "/x")
    assert refused.value.type == "tokens" and "per day" in refused.value.message
    limiter.admit(key(daily_tokens=600), "/x")


def test_usage_totals_by_day_model_and_key(tmp_path: Path):
    store = KeyStore(tmp_path / "keys.sqlite3")
    usage = UsageLog(store)
    now = 1_800_000_000.0
    usage._write(
        [
            UsageRecord(now, "a", "m1", "/r", 10, 5, 2, 200, 1),
            UsageRecord(now + 1, "a", "m2", "/r", 20, 5, 0, 200, 1),
            UsageRecord(now + 2, "b", "m1", "/r", 1, 1, 0, 429, 1),
        ]
    )
    by_key = {r.group: r for r in usage.totals(since=now - 1, by="key")}
    assert (by_key["a"].requests, by_key["a"].total_tokens, by_key["a"].cached_tokens) == (2, 40, 2)
    assert [r.group for r in usage.totals(since=now - 1, by="model")] == ["m1", "m2"]
    assert [r.key for r in usage.totals(since=now - 1, by="day", split_keys=True)] == ["a", "b"]
    assert usage.totals(since=now - 1, by="day", key="b")[0].requests == 1
    assert usage.last_used() == {"a": now + 1, "b": now + 2}


def test_a_key_database_from_before_thinking_models_gains_the_reasoning_column(tmp_path: Path):
    import sqlite3

    path = tmp_path / "keys.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE usage (ts REAL NOT NULL, key TEXT NOT NULL, model TEXT NOT NULL, route TEXT NOT NULL, "
        "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, cached_tokens INTEGER NOT NULL, "
        "status INTEGER NOT NULL, duration_ms INTEGER NOT NULL)"
    )
    old.execute("INSERT INTO usage VALUES (1e9, 'a', 'm', '/r', 3, 4, 0, 200, 1)")
    old.commit()
    old.close()
    usage = UsageLog(KeyStore(path))
    usage._write([UsageRecord(1e9 + 1, "a", "m", "/r", 1, 9, 0, 200, 1, reasoning_tokens=6)])
    [row] = usage.totals(since=0, by="key")
    assert (row.requests, row.completion_tokens, row.reasoning_tokens) == (2, 13, 6)
