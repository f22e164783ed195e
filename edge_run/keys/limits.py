"""Per-key limits: requests and tokens per minute, requests at once, tokens per day.

Everything runs on the event loop, and a request is checked and counted in one step with no ``await``
in between, so concurrent requests cannot slip past a limit together. Tokens count as they flow: a
streamed answer adds each token when it is produced, so a client that streams cannot outrun ``tpm``.
A request already running is never cut off; the next one is refused while the minute (or the day) is
full.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from edge_run.errors import RateLimited
from edge_run.keys.usage import UsageRecord

if TYPE_CHECKING:
    from edge_run.keys.store import KeyRecord
    from edge_run.keys.usage import UsageLog

__all__ = ["Lease", "Limiter"]

WINDOW = 60.0  # seconds: rpm and tpm


@dataclass
class _KeyState:
    requests: deque[float] = field(default_factory=deque)  # start times within the window
    tokens: deque[tuple[float, int]] = field(default_factory=deque)  # (time, tokens) within the window
    tokens_in_window: int = 0
    running: int = 0
    day: str = ""
    day_tokens: int = 0


def _duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``7s``, ``1m30s``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, secs = divmod(math.ceil(seconds), 60)
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


class Limiter:
    """The limits of every key, in memory; daily totals start from the usage records."""

    def __init__(self, usage: UsageLog | None = None, clock: Callable[[], float] = time.time) -> None:
        self._usage = usage
        self._clock = clock
        self._keys: dict[str, _KeyState] = {}

    def _state(self, key: KeyRecord, now: float) -> _KeyState:
        state = self._keys.setdefault(key.name, _KeyState())
        while state.requests and state.requests[0] <= now - WINDOW:
            state.requests.popleft()
        while state.tokens and state.tokens[0][0] <= now - WINDOW:
            state.tokens_in_window -= state.tokens.popleft()[1]
        today = datetime.fromtimestamp(now).strftime("%Y-%m-%d")
        if state.day != today:
            midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
            state.day = today
            state.day_tokens = self._usage.tokens_since(key.name, midnight) if self._usage else 0
        return state

    def admit(self, key: KeyRecord, route: str) -> Lease:
        """Count a new request of ``key``, or raise ``RateLimited`` (with ``Retry-After`` and the headers)."""
        now = self._clock()
        state = self._state(key, now)
        refusal: tuple[str, str, float] | None = None
        if key.max_parallel is not None and state.running >= key.max_parallel:
            refusal = ("requests", f"{key.max_parallel} requests at once", 1.0)
        elif key.rpm is not None and len(state.requests) >= key.rpm:
            refusal = ("requests", f"{key.rpm} requests per minute", state.requests[0] + WINDOW - now)
        elif key.tpm is not None and state.tokens_in_window >= key.tpm:
            refusal = ("tokens", f"{key.tpm} tokens per minute", self._tokens_free_in(key, state, now))
        elif key.daily_tokens is not None and state.day_tokens >= key.daily_tokens:
            tomorrow = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
            refusal = ("tokens", f"{key.daily_tokens} tokens per day", tomorrow + 86400 - now)
        if refusal is not None:
            kind, limit, wait = refusal
            raise RateLimited(
                f"Rate limit reached for key `{key.name}`: {limit}. Please try again in {_duration(wait)}.",
                kind=kind,
                retry_after=max(1, math.ceil(wait)),
                headers=self.headers(key, state, now),
            )
        state.requests.append(now)
        state.running += 1
        return Lease(self, key, route, now, self.headers(key, state, now))

    def _tokens_free_in(self, key: KeyRecord, state: _KeyState, now: float) -> float:
        """Seconds until the window holds fewer than ``tpm`` tokens."""
        assert key.tpm is not None
        left = state.tokens_in_window
        for at, n in state.tokens:
            left -= n
            if left < key.tpm:
                return at + WINDOW - now
        return 0.0

    def headers(self, key: KeyRecord, state: _KeyState, now: float) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers for the limits this key has."""
        out: dict[str, str] = {}
        if key.rpm is not None:
            reset = state.requests[0] + WINDOW - now if state.requests else 0.0
            out["x-ratelimit-limit-requests"] = str(key.rpm)
            out["x-ratelimit-remaining-requests"] = str(max(0, key.rpm - len(state.requests)))
            out["x-ratelimit-reset-requests"] = _duration(reset)
        if key.tpm is not None:
            reset = self._tokens_free_in(key, state, now) if state.tokens_in_window >= key.tpm else 0.0
            if state.tokens and not reset:
                reset = state.tokens[0][0] + WINDOW - now
            out["x-ratelimit-limit-tokens"] = str(key.tpm)
            out["x-ratelimit-remaining-tokens"] = str(max(0, key.tpm - state.tokens_in_window))
            out["x-ratelimit-reset-tokens"] = _duration(reset)
        return out

    def _spend(self, key: KeyRecord, tokens: int) -> None:
        now = self._clock()
        state = self._state(key, now)
        state.tokens.append((now, tokens))
        state.tokens_in_window += tokens
        state.day_tokens += tokens

    def _finished(self, key: KeyRecord) -> None:
        state = self._keys.get(key.name)
        if state is not None:
            state.running -= 1


@dataclass(eq=False)
class Lease:
    """One admitted request: it spends tokens as they flow and frees its place when it ends."""

    limiter: Limiter
    key: KeyRecord
    route: str
    started: float
    headers: dict[str, str]
    done: bool = False

    def spend(self, tokens: int) -> None:
        """Prompt or generated tokens, counted against the key's per-minute and per-day limits now."""
        if tokens > 0:
            self.limiter._spend(self.key, tokens)

    def finish(
        self,
        status: int,
        *,
        model: str = "",
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cached_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> None:
        """The response is over (sent, failed or cut off): free its place, and record it once."""
        if self.done:
            return
        self.done = True
        self.limiter._finished(self.key)
        usage = self.limiter._usage
        if usage is not None:
            now = self.limiter._clock()
            usage.add(
                UsageRecord(
                    ts=self.started,
                    key=self.key.name,
                    model=model,
                    route=self.route,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    cached_tokens=cached_tokens,
                    status=status,
                    duration_ms=int((now - self.started) * 1000),
                    reasoning_tokens=reasoning_tokens,
                )
            )
