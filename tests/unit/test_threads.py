"""The thread governor on simulated step times: a quiet machine, a busy one, and the way back."""

from __future__ import annotations

import itertools
from typing import ClassVar

import pytest

from edge_run.engine.threads import (
    ABORT,
    ABORT_MORE,
    COLLAPSE,
    PROBE_EVERY,
    PROBE_MAX,
    TRY_SHARE,
    CoreShare,
    Steps,
    ThreadGovernor,
    kind,
)


class Machine:
    """Step times (seconds) by thread count, as a 2-core machine gives them, quiet or busy."""

    QUIET: ClassVar[dict[int, float]] = {2: 0.010, 1: 0.016}
    BUSY: ClassVar[dict[int, float]] = {2: 0.400, 1: 0.020}  # beside a CPU-bound process the spinning threads collapse

    def __init__(self) -> None:
        self.now = 0.0
        self.busy = False

    def clock(self) -> float:
        return self.now

    STOPS = False  # whether a step past its deadline is stopped (``Stopping``)

    def run(self, governor: ThreadGovernor, steps: int, rows: int = 1) -> list[int]:
        used = []
        for _ in range(steps):
            threads = governor.for_step(rows)
            seconds = (self.BUSY if self.busy else self.QUIET)[threads]
            limit = governor.deadline(threads, rows) if self.STOPS else None
            if limit is not None and seconds > limit:  # stopped, and done again on one thread, unjudged
                self.now += limit + (self.BUSY if self.busy else self.QUIET)[1]
                governor.observe(threads, rows, limit)
                used.append(-threads)
                continue
            self.now += seconds
            governor.observe(threads, rows, seconds)
            used.append(threads)
        return used


def test_a_quiet_machine_keeps_every_thread_and_tries_one_rarely():
    m = Machine()
    g = ThreadGovernor(2, clock=m.clock)
    used = m.run(g, 5000)  # 50 s of steps
    assert g.threads == 2 and g.switches == 0
    tries = used.count(1)
    assert 1 <= tries <= 50 / PROBE_MAX + 4  # the wait doubles up to PROBE_MAX


def test_tries_on_long_steps_cost_a_small_share_of_the_time():
    """A long prompt's 64-row blocks take 0.6 s each: a lost try of one thread every 8 s cost ~8% of the prompt."""
    m = Machine()
    m.QUIET = {2: 0.6, 1: 1.1}
    g = ThreadGovernor(2, clock=m.clock)
    used = m.run(g, 500, rows=64)  # 300 s of blocks
    assert g.threads == 2
    assert 1 <= used.count(1) <= 300 * TRY_SHARE / 0.6 + 2  # one step a try, a try per 30 s


def test_on_a_quiet_machine_a_try_of_one_thread_costs_one_step():
    """One thread only 1.3 times slower (under ``ABORT``): the first step no faster than two ends the try."""
    m = Machine()
    m.QUIET = {2: 0.010, 1: 0.013}
    g = ThreadGovernor(2, clock=m.clock)
    used = "".join(map(str, m.run(g, 5000)))
    assert g.threads == 2 and "1" in used and "11" not in used


def test_a_busy_machine_drops_to_one_thread_after_three_slow_steps():
    m = Machine()
    g = ThreadGovernor(2, clock=m.clock)
    m.run(g, 100)
    m.busy = True
    used = m.run(g, 9)
    assert used == [2, 2, 2, 1, 1, 1, 1, 1, 1]  # three slow steps, then the try at one thread wins
    assert g.threads == 1 and g.switches == 1


def test_while_busy_the_full_count_is_tried_less_and_less_often():
    m = Machine()
    g = ThreadGovernor(2, clock=m.clock)
    m.run(g, 100)
    m.busy = True
    start = m.now
    used = m.run(g, 3000)  # about a minute at one thread
    tries = (used.count(2) - 3) / ABORT_MORE  # minus the steps that noticed the load; a try loses at its second
    minutes = (m.now - start) / 60
    assert g.threads == 1
    assert tries <= 4 + 60 * minutes / PROBE_MAX
    # the tries cost little: most of the time went to fast steps
    assert sum(Machine.BUSY[t] for t in used) < 1.25 * len(used) * Machine.BUSY[1]


def _after_a_busy_spell(m: Machine) -> ThreadGovernor:
    """A governor that saw 100 quiet steps, then 1,000 busy ones; the machine quiet again."""
    g = ThreadGovernor(2, clock=m.clock)
    m.run(g, 100)
    m.busy = True
    m.run(g, 1000)
    m.busy = False
    return g


def test_it_returns_to_every_thread_once_the_machine_is_quiet_again():
    m = Machine()
    g = _after_a_busy_spell(m)
    m.run(g, 3000)
    assert g.threads == 2
    assert g.switches == 2


def test_a_try_of_all_threads_outlasts_one_slow_step_of_threads_waking_up():
    """Quiet again after a busy spell, the engine sat idle 9 s: the try's first step on two threads took 1.6 times
    the step on one (on a 2-vCPU Xeon, 28 ms against 18), and ended the try, so the whole answer ran on one thread.
    Now the try goes on, and wins."""
    m = Stopping()
    g = _after_a_busy_spell(m)
    m.now += 9.0
    assert g.threads == 1 and g.for_step(1) == 2  # a try is due
    g.observe(2, 1, 1.05 * g.deadline(2, 1))  # waking up: stopped at its deadline, a little after it
    used = m.run(g, 4)
    assert g.threads == 2 and used == [2, 2, 2, 2]


def test_a_due_try_waits_for_a_cheap_step_but_not_for_ever():
    """A conversation's turns: a prompt block of 64 rows (0.2 s), then generated rows (10 ms). A try of one thread
    costs its step again: it lands on a generated row. Prompt blocks alone are tried too, once overdue."""
    m = Machine()
    m.QUIET = {2: 0.010, 1: 0.016}
    g = ThreadGovernor(2, clock=m.clock)
    blocks = {2: 0.200, 1: 0.320}
    tried_on = []
    for _ in range(200):  # 200 turns, 6 s each
        for rows, times, steps in ((64, blocks, 1), (1, m.QUIET, 200)):
            for _ in range(steps):
                threads = g.for_step(rows)
                m.now += times[threads]
                g.observe(threads, rows, times[threads])
                if threads == 1:
                    tried_on.append(rows)
    assert g.threads == 2 and tried_on and set(tried_on) == {1}
    g = ThreadGovernor(2, clock=m.clock)  # a generated row once, then a long prompt's blocks only
    start = m.now
    g.observe(2, 1, m.QUIET[2])
    first_try = None
    for _ in range(200):  # 40 s of blocks
        threads = g.for_step(64)
        if threads == 1 and first_try is None:
            first_try = m.now - start
        m.now += blocks[threads]
        g.observe(threads, 64, blocks[threads])
    assert first_try is not None and PROBE_EVERY + PROBE_MAX <= first_try < PROBE_EVERY + PROBE_MAX + 1


def test_a_machine_busy_from_the_start_is_found_by_the_tries():
    m = Machine()
    m.busy = True
    g = ThreadGovernor(2, clock=m.clock)
    used = m.run(g, 200)
    assert g.threads == 1
    assert used[-50:] == [1] * 50
    assert used.index(1) <= PROBE_EVERY / Machine.BUSY[2] + 1  # found at the first try


def test_a_first_request_seconds_after_start_gets_every_thread():
    """The first steps come long after the first try was due, and of kinds with no time yet: they run on the
    setting in use, and the tries after them are judged (before, the try ran on with no verdict, for good)."""
    m = Machine()
    g = ThreadGovernor(2, clock=m.clock)
    m.now += 30.0  # the server waits for its first request
    used = m.run(g, 500, rows=64) + m.run(g, 500, rows=1)
    assert g.threads == 2 and g.switches == 0
    assert used[0] == 2 and used[500] == 2  # each new kind starts on the setting in use
    assert used.count(1) <= 2 * (10 / PROBE_MAX + 4)


def test_a_lone_slow_step_is_noise():
    m = Machine()
    g = ThreadGovernor(2, clock=m.clock)
    m.run(g, 100)
    for _ in range(5):  # pauses (the garbage collector, another program's burst), each after a normal step
        g.observe(g.for_step(1), 1, 0.5)
        g.observe(g.for_step(1), 1, Machine.QUIET[2])
    assert m.run(g, 3) == [2, 2, 2]


def test_a_mild_slowdown_that_lasts_is_found():
    """Beside a busy process the two threads may be only 1.7 times slower, step after step."""
    m = Machine()
    g = ThreadGovernor(2, clock=m.clock)
    m.run(g, 100)
    m.BUSY = {2: 0.017, 1: 0.011}
    m.busy = True
    used = m.run(g, 10)
    assert g.threads == 1 and used.index(1) <= 3


def test_step_times_are_compared_row_count_by_row_count():
    m = Machine()
    g = ThreadGovernor(2, clock=m.clock)
    m.run(g, 100, rows=1)
    # 8 rows take longer than 1 row: not a sign of a busy machine
    for _ in range(100):
        threads = g.for_step(8)
        g.observe(threads, 8, 0.05 if threads == 2 else 0.09)
        m.now += 0.05
    assert g.threads == 2 and g.switches == 0


def test_a_single_thread_or_a_gpu_is_left_alone():
    m = Machine()
    for g in (ThreadGovernor(1, clock=m.clock), ThreadGovernor(8, adapt=False, clock=m.clock)):
        m.busy = True
        for _ in range(100):
            g.observe(g.for_step(1), 1, 1.0)
            m.now += 1.0
        assert g.switches == 0 and g.for_step(1) == g.max


def test_all_threads_come_back_when_they_are_only_a_little_faster():
    """A single stream on 2 cores: 2 threads are about 9% faster than 1, so once quiet, 2 it is."""
    m = Machine()
    m.QUIET = {2: 0.0055, 1: 0.0060}
    g = ThreadGovernor(2, clock=m.clock)
    m.run(g, 100)
    m.busy = True
    m.run(g, 500)
    assert g.threads == 1
    m.busy = False
    m.run(g, 3000)  # 18 s
    assert g.threads == 2


def test_a_lucky_step_on_a_busy_machine_does_not_bring_all_threads_back():
    """Beside a busy process, a 2-thread step is now and then fast (the other process was descheduled)."""
    m = Machine()
    g = ThreadGovernor(2, clock=m.clock)
    m.run(g, 100)
    m.busy = True
    lucky = itertools.cycle([True, False])
    collapsed = 0.0
    for _ in range(3000):
        threads = g.for_step(1)
        seconds = Machine.BUSY[threads]
        if threads == 2 and next(lucky):
            seconds = Machine.QUIET[2]
        collapsed += seconds if threads == 2 else 0.0
        m.now += seconds
        g.observe(threads, 1, seconds)
    assert g.threads == 1
    # under a seventh of the time went to 2-thread steps, collapsed ones run to their end here (not stopped as
    # Steps stops them): a try of all threads ends at its second such step
    assert collapsed < 0.15 * m.now


def test_core_share_splits_the_cores_among_active_models_and_never_oversubscribes():
    import threading

    from edge_run.engine import CoreShare

    share = CoreShare(2)
    a, b = share.join(), share.join()
    share.set_active(a, True)
    assert share.acquire(a, 2) == 2  # alone: all the cores
    share.set_active(b, True)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(share.acquire(b, 2)))
    waiter.start()
    waiter.join(0.1)
    assert waiter.is_alive() and not got  # a's step holds both cores: b waits for it to end
    share.release(a)
    waiter.join(2)
    assert got == [1]  # two active models: one core each
    assert share.acquire(a, 2) == 1
    share.release(a)
    share.release(b)
    share.set_active(b, False)
    assert share.acquire(a, 2) == 2  # b went idle: a gets them back
    share.release(a)
    odd = CoreShare(3)
    x, y = odd.join(), odd.join()
    odd.set_active(x, True)
    odd.set_active(y, True)
    assert (odd.acquire(x, 8), odd.acquire(y, 8)) == (2, 1)  # the remainder goes to the first registered


def test_idle_work_takes_no_cores_while_another_model_answers():
    """A model refreshing a finished answer (idle work) waits while another answers requests; alone, or once it has
    a request itself, it takes its share again. The model answering keeps all the cores meanwhile."""
    import threading

    from edge_run.engine import CoreShare

    share = CoreShare(2)
    idle, answering = share.join(), share.join()
    share.set_active(idle, True, idle_work=True)
    assert share.acquire(idle, 2) == 2  # alone: all the cores
    share.release(idle)
    share.set_active(answering, True)
    assert share.acquire(answering, 2) == 2  # idle work is not counted in the split
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(share.acquire(idle, 2)))
    waiter.start()
    share.release(answering)  # between two steps of the request: the cores are free, and still not idle work's
    waiter.join(0.1)
    assert waiter.is_alive() and not got
    share.set_active(answering, False)
    waiter.join(2)
    assert got == [2]  # the other model went idle
    share.release(idle)
    share.set_active(answering, True)
    waiter = threading.Thread(target=lambda: got.append(share.acquire(idle, 2)))
    waiter.start()
    waiter.join(0.1)
    assert waiter.is_alive()
    share.set_active(idle, True)  # a request for the refreshing model (Worker.submit): it takes its share now
    waiter.join(2)
    assert got == [2, 1]


@pytest.mark.parametrize("user", [{}, {"OMP_WAIT_POLICY": "passive"}], ids=["ours", "the user's"])
def test_libgomp_loads_with_the_adapters_spinning_unless_the_user_set_it(user: dict[str, str]):
    """libgomp prints the settings it read at load (``OMP_DISPLAY_ENV``): the adapter's (1000 throttled spins, the
    default 3 ms otherwise), set before llama.cpp loaded it; a user's own setting stays as it is."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(user, OMP_DISPLAY_ENV="verbose")
    code = "import edge_run.engine.llama.backend"
    shown = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stderr
    expected = ("ACTIVE", "300000") if not user else ("PASSIVE", "0")  # passive: no spinning, the user's choice
    assert f"OMP_WAIT_POLICY = '{expected[0]}'" in shown and f"GOMP_SPINCOUNT = '{expected[1]}'" in shown, shown


def test_a_try_at_a_short_kv_is_not_judged_by_the_steps_at_a_long_one():
    """Blocks at 8,000 KV cells take 3 times as long as at 700: a try of one thread on the next, short prompt
    won against them, and the whole prompt ran on one thread. Each span of ``KV_SPAN`` cells is its own kind."""
    m = Machine()
    g = ThreadGovernor(2, clock=m.clock)
    slow = {2: 0.030, 1: 0.048}  # a block at 8,000 cells
    for _ in range(200):
        threads = g.for_step(kind(64, 8000))
        m.now += slow[threads]
        g.observe(threads, kind(64, 8000), slow[threads])
    m.now += PROBE_MAX  # a try is due
    used = m.run(g, 50, rows=kind(64, 700))  # type: ignore[arg-type]  # a kind, as the scheduler passes it
    assert g.threads == 2 and g.switches == 0 and used[0] == 2
    assert kind(64, 700) != kind(64, 8000) and kind(64, 700) == kind(64, 1000)


class Stopping(Machine):
    """As :class:`Steps` runs them: a step on more threads than one that runs past its deadline is stopped there and
    done again on one thread (that one unjudged); such steps show as ``-threads``."""

    STOPS = True


def test_a_step_may_run_a_few_times_its_best_on_all_threads_and_a_try_what_loses_it():
    m = Machine()
    g = ThreadGovernor(2, clock=m.clock)
    assert g.deadline(2, 1) is None  # no time yet for that kind
    m.run(g, 100)
    assert g.deadline(2, 1) == pytest.approx(COLLAPSE * Machine.QUIET[2])
    assert g.deadline(1, 1) is None and ThreadGovernor(1).deadline(1, 1) is None  # one thread never collapses
    m.busy = True
    m.run(g, 20)
    assert g.threads == 1
    assert g.deadline(2, 1) == pytest.approx(ABORT * Machine.BUSY[1], rel=0.1)  # a try of both: it loses past that


def test_collapsed_steps_are_stopped_so_the_load_costs_a_few_normal_steps_to_notice():
    m = Stopping()
    g = ThreadGovernor(2, clock=m.clock)
    m.run(g, 100)
    m.busy = True
    start = m.now
    used = m.run(g, 9)
    assert used == [-2, -2, -2, 1, 1, 1, 1, 1, 1]  # stopped at 3 times the best, then the try at one thread wins
    assert g.threads == 1
    noticing = m.now - start - 9 * Machine.BUSY[1]
    assert noticing == pytest.approx(3 * COLLAPSE * Machine.QUIET[2], rel=0.01)  # 3 collapsed steps: 1.2 s


def test_while_busy_a_try_of_all_threads_costs_three_steps():
    """Two steps stopped at 1.5 times the step on one thread (each done again on one): 3 steps lost a try."""
    m = Stopping()
    g = ThreadGovernor(2, clock=m.clock)
    m.run(g, 100)
    m.busy = True
    used = m.run(g, 3000)
    assert g.threads == 1 and -2 in used[20:] and 2 not in used
    spent = m.now - 100 * Machine.QUIET[2]
    assert spent < 1.03 * len(used) * Machine.BUSY[1]  # against 1.25 when each try took its collapsed step
    m.busy = False
    m.run(g, 3000)
    assert g.threads == 2  # and it comes back


def test_a_lone_collapsed_step_on_a_quiet_machine_is_stopped_and_keeps_every_thread():
    m = Stopping()
    g = ThreadGovernor(2, clock=m.clock)
    m.run(g, 100)
    m.busy = True
    assert m.run(g, 1) == [-2]
    m.busy = False
    m.run(g, 100)
    assert g.threads == 2 and g.switches == 0


class _Context:
    """A context that stops every call given a deadline while ``late`` (as llama.cpp does once the alarm goes off)."""

    def __init__(self, late: bool = True) -> None:
        self.late, self.threads, self.calls = late, 2, []  # made with 2 threads

    def splits_lone_row(self, pos: int) -> bool:
        return pos >= 256

    def set_threads(self, threads: int) -> None:
        self.threads = threads

    def decode(self, batch, *, causal: bool = True, abort=None, deadline=None, reference: bool = False) -> bool:
        self.calls.append((self.threads, deadline))
        return not (deadline is not None and self.late) and (abort is None or not abort())


class _Batch:
    def __init__(self, n: int, pos: int = 0) -> None:
        self.n, self._pos = n, pos

    def position(self, i: int) -> int:
        return self._pos + i


def _steps(ctx: _Context, *, stoppable: bool = True) -> Steps:
    governor = ThreadGovernor(2)
    governor.observe(2, kind(1, 0), 0.010)  # a best time for steps of one row
    return Steps(ctx, governor, CoreShare(2), 1, 1, stoppable)


def test_a_step_stopped_at_its_deadline_is_done_again_on_one_thread():
    ctx = _Context()
    steps = _steps(ctx)
    assert steps.decode(_Batch(1))
    assert ctx.calls == [(2, pytest.approx(COLLAPSE * 0.010)), (1, None)]
    assert steps.late == 1 and steps.threads_now == 1
    ctx.late = False
    assert steps.decode(_Batch(1)) and ctx.calls[-1][0] == 2 and steps.late == 1


def test_a_step_its_caller_stops_or_that_samples_inside_the_call_is_not_done_again():
    ctx = _Context(late=False)
    assert not _steps(ctx).decode(_Batch(1), abort=lambda: True)  # a request came: the refresh's call stops
    assert ctx.calls == [(2, pytest.approx(COLLAPSE * 0.010))]
    ctx = _Context()
    steps = _steps(ctx, stoppable=False)
    assert steps.decode(_Batch(1)) and ctx.calls == [(2, None)] and steps.late == 0


def test_a_lone_row_with_a_split_kv_runs_on_its_own_thread_count_with_no_deadline():
    ctx = _Context()
    steps = _steps(ctx)
    steps.governor.observe(2, kind(1, 300), 0.010)
    assert steps.decode(_Batch(1, pos=300)) and ctx.calls == [(1, None)]
