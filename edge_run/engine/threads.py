"""How many threads llama.cpp gets for the next step: all of them on a quiet machine, one when the
machine is busy.

llama.cpp's threads meet at a barrier after every operation of a step, spinning while they wait
(OpenMP's active wait). When another program takes a core, a spinning thread waits for one that is not
running, at every operation, and a step takes many times longer: single-stream speed fell from 61 to
0.7 tokens/s beside one CPU-bound process on 2 cores, while one thread kept 47. No static setting
is right for both states, so the engine tries the other setting now and then, on one step, and keeps
whichever is faster:

- a step that takes far longer than the usual step of its kind (a jump) is tried again at once at one
  thread;
- otherwise the other setting is tried every ``PROBE_EVERY`` seconds, and a try that does not win
  doubles the wait, up to ``PROBE_MAX``: on a quiet machine that is one single-thread step in 16 s.

A "kind" of step is its number of rows and its thread count: a step of 4 rows takes longer than one of
a single row, whatever the machine does.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["ThreadGovernor"]

PROBE_EVERY = 2.0  # seconds between tries of the other setting, at first
PROBE_MAX = 16.0  # ... and at most, after tries that lost
WIN = 0.85  # a try wins when its step took under this share of the usual one
JUMP = 3.0  # a step this many times slower than usual means the machine just got busy
SMOOTH = 0.2  # weight of the newest step in the usual time


class ThreadGovernor:
    def __init__(self, threads: int, *, adapt: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self.max = threads
        self.adapt = adapt and threads > 1
        self.threads = threads  # the setting in use
        self._clock = clock
        self._usual: dict[tuple[int, int], float] = {}  # (threads, rows) -> smoothed step time
        self._last: dict[tuple[int, int], float] = {}  # (threads, rows) -> the latest step time
        self._wait = PROBE_EVERY
        self._next_probe = clock() + PROBE_EVERY
        self._probe_now = False
        self.switches = 0

    @property
    def alternative(self) -> int:
        return 1 if self.threads == self.max else self.max

    def for_step(self) -> int:
        """The thread count for the next step: the setting in use, or on a try, the other one."""
        if not self.adapt:
            return self.threads
        if self._probe_now or self._clock() >= self._next_probe:
            return self.alternative
        return self.threads

    def observe(self, threads: int, rows: int, seconds: float) -> None:
        """Record a step of ``rows`` rows that took ``seconds`` with ``threads`` threads."""
        if not self.adapt:
            return
        key = (self.threads, rows)
        if threads != self.threads:  # a try of the other setting, against the setting in use now
            self._probe_now = False
            ref = max(self._usual.get(key, 0.0), self._last.get(key, 0.0))
            if seconds < WIN * ref:
                self.threads = threads
                self.switches += 1
                self._wait = PROBE_EVERY
                self._usual[(threads, rows)] = self._last[(threads, rows)] = seconds
            else:
                self._wait = min(self._wait * 2, PROBE_MAX)
            self._next_probe = self._clock() + self._wait
            return
        usual = self._usual.get(key)
        self._last[key] = seconds
        if usual is None:
            self._usual[key] = seconds
            return
        if seconds > JUMP * usual and self.threads == self.max:
            self._probe_now = True
        self._usual[key] = usual + SMOOTH * (seconds - usual)
