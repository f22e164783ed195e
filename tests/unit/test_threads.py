"""The thread governor on simulated step times: a quiet machine, a busy one, and the way back."""

from __future__ import annotations

from typing import ClassVar

from edge_run.engine.threads import PROBE_EVERY, PROBE_MAX, ThreadGovernor


class Machine:
    """Step times (seconds) by thread count, as a 2-core machine gives them, quiet or busy."""

    QUIET: ClassVar[dict[int, float]] = {2: 0.010, 1: 0.016}
    BUSY: ClassVar[dict[int, float]] = {2: 0.400, 1: 0.020}  # beside a CPU-bound process the spinning threads collapse

    def __init__(self) -> None:
        self.now = 0.0
        self.busy = False

    def clock(self) -> float:
        return self.now

    def run(self, governor: ThreadGovernor, steps: int, rows: int = 1) -> list[int]:
        used = []
        for _ in range(steps):
            threads = governor.for_step()
            seconds = (self.BUSY if self.busy else self.QUIET)[threads]
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


def test_a_busy_machine_drops_to_one_thread_at_the_first_slow_step():
    m = Machine()
    g = ThreadGovernor(2, clock=m.clock)
    m.run(g, 100)
    m.busy = True
    used = m.run(g, 3)
    assert used == [2, 1, 1]  # the slow step, then the try at one thread wins
    assert g.threads == 1 and g.switches == 1


def test_while_busy_the_full_count_is_tried_less_and_less_often():
    m = Machine()
    g = ThreadGovernor(2, clock=m.clock)
    m.run(g, 100)
    m.busy = True
    start = m.now
    used = m.run(g, 3000)  # about a minute at one thread
    tries = used.count(2) - 1  # minus the step that noticed the load
    minutes = (m.now - start) / 60
    assert g.threads == 1
    assert tries <= 4 + 60 * minutes / PROBE_MAX
    # the tries cost little: most of the time went to fast steps
    assert sum(Machine.BUSY[t] for t in used) < 1.25 * len(used) * Machine.BUSY[1]


def test_it_returns_to_every_thread_once_the_machine_is_quiet_again():
    m = Machine()
    g = ThreadGovernor(2, clock=m.clock)
    m.run(g, 100)
    m.busy = True
    m.run(g, 1000)
    m.busy = False
    m.run(g, 3000)
    assert g.threads == 2
    assert g.switches == 2


def test_a_machine_busy_from_the_start_is_found_by_the_tries():
    m = Machine()
    m.busy = True
    g = ThreadGovernor(2, clock=m.clock)
    used = m.run(g, 200)
    assert g.threads == 1
    assert used[-50:] == [1] * 50
    assert used.index(1) <= PROBE_EVERY / Machine.BUSY[2] + 1  # found at the first try


def test_step_times_are_compared_row_count_by_row_count():
    m = Machine()
    g = ThreadGovernor(2, clock=m.clock)
    m.run(g, 100, rows=1)
    # 8 rows take longer than 1 row: not a sign of a busy machine
    for _ in range(100):
        threads = g.for_step()
        g.observe(threads, 8, 0.05 if threads == 2 else 0.09)
        m.now += 0.05
    assert g.threads == 2 and g.switches == 0


def test_a_single_thread_or_a_gpu_is_left_alone():
    m = Machine()
    for g in (ThreadGovernor(1, clock=m.clock), ThreadGovernor(8, adapt=False, clock=m.clock)):
        m.busy = True
        for _ in range(100):
            g.observe(g.for_step(), 1, 1.0)
            m.now += 1.0
        assert g.switches == 0 and g.for_step() == g.max
