"""How many threads llama.cpp gets for the next step: all of them on a quiet machine, one when the
machine is busy.

llama.cpp's threads meet at a barrier after every operation of a step, spinning while they wait
(OpenMP's active wait). When another program takes a core, a spinning thread waits for one that is not
running, at every operation, and a step takes many times longer: single-stream speed fell from 61 to
0.7 tokens/s beside one CPU-bound process on 2 cores, while one thread kept 47. No static setting
is right for both states, so the engine tries the other setting now and then, on one step, and keeps
whichever is faster:

- when 3 of the latest 4 steps took 1.5 times the best recent step of their kind or more (one alone is
  noise), one thread is tried at once;
- otherwise the other setting is tried every ``PROBE_EVERY`` seconds, and a try that does not win
  doubles the wait, up to ``PROBE_MAX``: on a quiet machine that is one single-thread step in 8 s, and
  a machine that has gone quiet gets all its threads back within 8 s. After a try of long steps that did not
  win, the wait is at least ``1 / TRY_SHARE`` of those steps, so that tries cost at most that share of the time
  (a try on a 64-row block of a long prompt costs that block again, 0.4 to 0.8 s at 3,000 to 8,000 cells of KV;
  llama-server never tries);
- a try that is due waits for a cheap step (``CHEAP``), up to ``PROBE_MAX``: a try of one thread on a quiet machine
  costs its step again, 10 ms on a generated row but 100 to 250 ms on a prompt block (a cold 180-token prompt's first
  round at 0.77x llama-server; a 12-turn conversation paid one a few turns);
- a try lasts ``TRY_STEPS`` steps and wins on their mean (a single step is noise, and on a busy
  machine one can be lucky); a second step far slower than the setting in use ends a try of all threads at
  once, so on a busy machine it costs two steps (one alone is noise: the first step on two threads after the
  engine sat idle 9 s took 28 ms where one thread took 18, and the quiet answer ran on one thread for good), and a
  step of one thread no faster than all of them ends a try of one thread, so on a quiet machine that costs one
  step. When all threads won but are given up again soon after, the wait keeps growing instead of starting over;
- a step on all threads does not run to its end when it collapses: past ``COLLAPSE`` times the best recent step of
  its kind (a try of more threads: a step that counts against it), :class:`Steps` stops it and does it again on one
  thread. A collapsed step took 0.3 to 0.9 s where one thread takes 20 ms, so noticing the load cost 3 of them, over
  a second, and every lost try of all threads one more; now each costs a few normal steps.

A "kind" of step is its number of rows, how far its KV reaches (in spans of ``KV_SPAN`` cells) and its thread
count: a step of 4 rows takes longer than one of a single row, and one at 8,000 cells longer than one at 700,
whatever the machine does (a try of one thread on a 700-token prompt, judged against the steps of an 8,000-token
one just before, won, and the prompt ran on one thread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from functools import partial
from typing import Any

__all__ = ["CoreShare", "Steps", "ThreadGovernor", "kind"]

KV_SPAN = 1024  # a step's kind counts its KV in spans of this many cells
PROBE_EVERY = 2.0  # seconds between tries of the other setting, at first
PROBE_MAX = 8.0  # ... and at most, after tries that lost
TRY_SHARE = 0.02  # ... but at least the losing try's steps over this: tries cost 2% of the time at most
# A try wins when its step took under this share of the setting in use: clearly faster to give threads
# up, and merely faster to take them back (on a busy machine, all threads are many times slower)
WIN_FEWER = 0.85
WIN_MORE = 0.97
TRY_STEPS = 4  # a try's verdict is the mean of this many steps, unless one step is clearly worse:
ABORT = 1.5  # a second step of a try of more threads slower than this share of the setting in use ends the try
ABORT_MORE = 2  # ... (the first may be threads that wake up)
# ... and for a try of fewer threads, a step no faster than the setting in use: on a quiet machine one thread is
# 1.4 to 2 times slower, under ABORT, and a try went on for 4 prompt blocks every 8 s (a tenth of a long prompt)
ABORT_FEWER = 1.0
SLOW = 1.5  # a step this many times slower than the best recent one of its kind is slow...
SLOW_IN, SLOW_OF = 3, 4  # ... and 3 slow steps of the latest 4 mean the machine just got busy
DRIFT = 1.002  # how fast the best recent step time rises, per step
# A step on all threads that runs this many times its kind's best recent time is stopped and done again on one thread:
# on 2 cores beside a CPU-bound process, a 10 ms step of SmolLM2-135M took 0.3 to 0.9 s (its threads wait at every
# barrier for one that has no core), and the 3 slow steps that start a try cost a second
COLLAPSE = 3.0
SMOOTH = 0.2  # weight of the newest step in the usual time
# A try that is due waits for a step no dearer than this many times the cheapest kind the setting in use has a time
# for (a generated row, not a prompt block), ``PROBE_MAX`` at most
CHEAP = 2.0


def kind(rows: int, pos: int) -> tuple[int, int]:
    """The kind of a step of ``rows`` rows from KV position ``pos``."""
    return rows, pos // KV_SPAN


class ThreadGovernor:
    def __init__(self, threads: int, *, adapt: bool = True, clock: Callable[[], float] = time.monotonic) -> None:
        self.max = threads
        self.adapt = adapt and threads > 1
        self.threads = threads  # the setting in use
        self._clock = clock
        self._usual: dict[tuple[int, Hashable], float] = {}  # (threads, kind) -> smoothed step time
        self._wait = PROBE_EVERY
        self._next_probe = clock() + PROBE_EVERY
        self._probe_now = False
        self._best: dict[tuple[int, Hashable], float] = {}  # (threads, kind) -> the best recent step time
        self._recent: list[bool] = []  # whether each of the latest steps was slow
        self._tried: list[float] = []  # the try's steps so far, as shares of the setting in use
        self._switched_at = float("-inf")
        self.switches = 0

    @property
    def alternative(self) -> int:
        return 1 if self.threads == self.max else self.max

    def for_step(self, rows: Hashable) -> int:
        """The thread count for the next step, of kind ``rows``: the setting in use, or on a try, the other one.
        Only a kind of step that the setting in use has a time for is tried (else the try could never be judged,
        and went on for good: a server first asked seconds after it started ran on one thread from then on)."""
        if not self.adapt or (self.threads, rows) not in self._usual:
            return self.threads
        if self._probe_now:
            return self.alternative
        now = self._clock()
        if now < self._next_probe:
            return self.threads
        cheapest = min(t for (threads, _), t in self._usual.items() if threads == self.threads)
        cheap = self._usual[(self.threads, rows)] <= CHEAP * cheapest
        return self.alternative if cheap or now >= self._next_probe + PROBE_MAX else self.threads

    def deadline(self, threads: int, rows: Hashable) -> float | None:
        """How long a step of kind ``rows`` on ``threads`` may run before it is stopped (:class:`Steps`): on all
        threads, ``COLLAPSE`` times the best recent step of its kind; on a try of more threads, what counts against
        the try. None on one thread, and for a kind with no time yet."""
        if not self.adapt or threads == 1:
            return None
        if threads != self.threads:  # a try of more threads
            return ABORT * self._usual[(self.threads, rows)]  # for_step tries only kinds that have one
        best = self._best.get((threads, rows))
        return None if best is None else COLLAPSE * best

    def observe(self, threads: int, rows: Hashable, seconds: float) -> None:
        """Record a step of kind ``rows`` (:func:`kind`, or a row count) that took ``seconds`` with ``threads``."""
        if not self.adapt:
            return
        key = (self.threads, rows)
        if threads != self.threads:  # a step of a try of the other setting, against the setting in use
            # against the smoothed time of the setting in use: a few slow steps (our own event loop
            # writing to sockets beside the compute threads) must not hand a batch to one thread
            ref = self._usual[key]  # for_step tries only kinds that have one
            self._tried.append(seconds / ref)  # as a share of the setting in use: steps of several kinds mix
            more = threads > self.threads
            over = sum(share > (ABORT if more else ABORT_FEWER) for share in self._tried)
            fine = over < (ABORT_MORE if more else 1)
            if fine and len(self._tried) < TRY_STEPS:
                self._probe_now = True  # so far so good: the next step tries too
                return
            mean = sum(self._tried) / len(self._tried)
            if fine and mean < (WIN_MORE if more else WIN_FEWER):
                self._switch(threads, rows, seconds)
                wait = self._wait
            else:
                self._wait = min(self._wait * 2, PROBE_MAX)
                wait = max(self._wait, ref / TRY_SHARE)  # a lost try of long steps: 2% of the time at most
            self._tried = []
            self._probe_now = False
            self._next_probe = self._clock() + wait
            return
        usual = self._usual.get(key)
        self._usual[key] = seconds if usual is None else usual + SMOOTH * (seconds - usual)
        # the best recent step of this kind, allowed to rise slowly (contexts grow, steps get longer)
        best = min(seconds, self._best.get(key, seconds) * DRIFT)
        self._best[key] = best
        if self.threads == self.max:
            self._recent = [*self._recent[-(SLOW_OF - 1) :], seconds > SLOW * best]
            if sum(self._recent) >= SLOW_IN:  # the machine just got busy: try fewer threads now, against this step
                self._probe_now = True  # (the usual time lags behind: a try judged by it lost to steps stopped early)
                self._recent = []
                self._usual[key] = max(self._usual[key], seconds)

    def _switch(self, threads: int, rows: Hashable, seconds: float) -> None:
        now = self._clock()
        if threads < self.threads and now - self._switched_at < 2 * PROBE_MAX:
            self._wait = min(self._wait * 2, PROBE_MAX)  # all threads did not last: try them less often
        elif threads < self.threads:
            self._wait = PROBE_EVERY
        self.threads = threads
        self.switches += 1
        self._switched_at = now
        self._usual[(threads, rows)] = seconds


class Steps:
    """Each ``llama_decode`` of one model's context, on the governor's threads within the model's share of the cores
    (a lone row with a split KV on ``lone_row_threads``). A step on more than one thread that runs past its deadline
    (:meth:`ThreadGovernor.deadline`: the machine just got busy, or a try lost) is stopped, and done again on one
    thread, which waits at no barrier for a thread that has no core. llama.cpp drops a stopped call's rows, and a row
    computes the same on any thread count, so no answer moves. ``stoppable`` is False where a call may not be done
    twice (its samplers run inside it and draw their random numbers as it starts)."""

    def __init__(
        self, ctx: Any, governor: ThreadGovernor, cores: CoreShare, member: int, lone_row: int | None, stoppable: bool
    ) -> None:
        self.ctx, self.governor, self.cores, self.member = ctx, governor, cores, member
        self.lone_row_threads, self.stoppable = lone_row, stoppable
        self.threads_now = governor.max  # what the context was last set to (the governor may be trying another)
        self.late = 0  # steps stopped at their deadline and done again on one thread (``/health``: ``steps_late``)

    def decode(
        self,
        batch: Any,
        *,
        per: int = 0,
        causal: bool = True,
        abort: Callable[[], bool] | None = None,
        reference: bool = False,
    ) -> bool:
        """One ``llama_decode`` (the governor learns from it as ``batch.n / per`` steps of ``per`` rows); False where
        ``abort`` stopped it. A call with ``abort`` is idle work (the refresh of an answer): it takes the setting in
        use and tries nothing, since a lost try of its long calls put the next try off by 50 of them (``TRY_SHARE``),
        and the next request found one thread on a machine gone quiet (17 s of 64-row calls at 350 ms).
        ``reference``: on ggml-cpu's reference kernels (``Context.decode``)."""
        lone = self.lone_row_threads if batch.n == 1 and self.ctx.splits_lone_row(batch.position(0)) else None
        step = kind(per or batch.n, batch.position(0))
        share = batch.n / per if per else 1.0
        tried = self.governor.threads if abort else self.governor.for_step(step)
        call = partial(self.ctx.decode, batch, causal=causal, abort=abort, reference=reference)
        done, late = self._run(call, lone or tried, lone is None, step, share, abort)
        if late:
            self.late += 1
            done, _ = self._run(call, 1, False, step, share, abort)
        return done

    def _run(
        self,
        call: Callable[..., bool],
        wanted: int,
        judged: bool,
        step: Hashable,
        share: float,
        abort: Callable[[], bool] | None,
    ) -> tuple[bool, bool]:
        """``call`` (``Context.decode`` but its deadline) on ``wanted`` threads, judged by the governor where asked;
        (done, stopped at its deadline)."""
        threads = self.cores.acquire(self.member, wanted)  # or fewer: this model's free share of the cores
        if threads != self.threads_now:
            self.ctx.set_threads(threads)
        self.threads_now = threads
        judged = judged and threads == wanted  # a step cut short by the core share says nothing
        limit = self.governor.deadline(threads, step) if judged and self.stoppable else None
        start = time.perf_counter()
        try:
            done = call(deadline=limit and limit * share)
        finally:
            self.cores.release(self.member)
        late = not done and limit is not None and not (abort is not None and abort())
        if judged and (done or late):
            self.governor.observe(threads, step, (time.perf_counter() - start) / share)
        return done, late


class CoreShare:
    """The machine's cores, shared by every loaded model: together their steps never run more threads than it has.

    A model is active while its engine thread has work. Each step takes its share of the cores among the
    active models (the first registered get the remainder) and holds them until the step ends; a step that
    would find too few cores free waits for the running one to end. So two models answering at once on 2
    cores run one thread each, instead of 2 spinning threads each, which collapses llama.cpp (see the
    module docstring). A model whose only work is idle work (the refresh of a finished answer) takes no share
    while another answers requests: its steps wait until the others are idle.
    """

    def __init__(self, cores: int) -> None:
        self.cores = max(1, cores)
        self._cond = threading.Condition()
        self._members = 0
        # members with work, by handle (handles grow in registration order): True where it is idle work only
        self._active: dict[int, bool] = {}
        self._held: dict[int, int] = {}  # member -> threads of its step under way
        self.peak = 0  # the most threads that steps ran at one moment (``/health``: ``threads_peak``)

    def join(self) -> int:
        """A new member (one engine); returns its handle."""
        with self._cond:
            self._members += 1
            return self._members

    def set_active(self, member: int, active: bool, *, idle_work: bool = False) -> None:
        with self._cond:
            if active:
                self._active[member] = idle_work
            else:
                self._active.pop(member, None)
            self._cond.notify_all()

    def answering(self, *, but: int = 0) -> bool:
        """Whether any member (``but`` one) has a request, a call or a stop to see to: idle work stops for it (read
        unlocked, from llama.cpp's compute thread)."""
        return any(not idle_work for m, idle_work in list(self._active.items()) if m != but)

    def acquire(self, member: int, wanted: int) -> int:
        """Threads for ``member``'s next step: ``wanted``, or fewer to stay within its share; waits for one free."""
        with self._cond:
            while True:
                answering = {m for m, idle_work in self._active.items() if not idle_work}
                if self._active.get(member) and answering - {member}:
                    self._cond.wait()  # idle work waits for the other models' requests
                    continue
                active = sorted(answering | {member})
                base, extra = divmod(self.cores, len(active))
                share = max(1, base + (active.index(member) < extra))
                free = self.cores - sum(n for m, n in self._held.items() if m != member)
                threads = min(wanted, share, free)
                if threads >= 1:
                    self._held[member] = threads
                    self.peak = max(self.peak, sum(self._held.values()))
                    return threads
                self._cond.wait()

    def release(self, member: int) -> None:
        """The step is over: its cores are free."""
        with self._cond:
            self._held.pop(member, None)
            self._cond.notify_all()
