"""The engine hands results to the event loop in batches, but never holds a first or last token."""

from __future__ import annotations

from edge_run.engine.handover import Handover
from edge_run.engine.slots import Job
from edge_run.engine.types import Chunk


def job() -> Job:
    return Job(prompt=[1], sampler=None, max_tokens=8, stops=(), deliver=lambda _: None)  # type: ignore[arg-type]


def tokens(j: Job, *counts: int, finish: str | None = None) -> list[tuple[Job, Chunk]]:
    return [
        (j, Chunk(text="x", completion_tokens=n, finish_reason=finish if n == counts[-1] else None)) for n in counts
    ]


def test_tokens_in_between_wait_for_the_interval_first_and_last_go_at_once() -> None:
    sent: list[list[int]] = []
    h = Handover(lambda out: sent.append([c.completion_tokens for _, c in out]), interval=0.05)
    a = job()
    h.add(tokens(a, 1), 0.000, idle=False)  # first token: at once
    h.add(tokens(a, 2), 0.010, idle=False)
    h.add(tokens(a, 3), 0.020, idle=False)
    assert sent == [[1]]
    h.add(tokens(a, 4), 0.050, idle=False)  # the interval has passed
    h.add(tokens(a, 5), 0.060, idle=False)
    h.add(tokens(a, 6, finish="length"), 0.070, idle=True)  # last token: at once, with what waited
    assert sent == [[1], [2, 3, 4], [5, 6]]


def test_another_requests_first_token_takes_the_waiting_tokens_along() -> None:
    sent: list[list[tuple[int, int]]] = []
    h = Handover(lambda out: sent.append([(id(j), c.completion_tokens) for j, c in out]), interval=0.05)
    a, b = job(), job()
    h.add(tokens(a, 1), 0.0, idle=False)
    h.add(tokens(a, 2), 0.01, idle=False)
    h.add(tokens(a, 3) + tokens(b, 1), 0.02, idle=False)
    assert sent == [[(id(a), 1)], [(id(a), 2), (id(a), 3), (id(b), 1)]]


def holding_a_token() -> tuple[Handover, list[int]]:
    """A hand-over that has sent a first token and holds the second (the interval is far off)."""
    sent: list[int] = []
    h = Handover(lambda out: sent.append(len(out)), interval=10.0)
    a = job()
    h.add(tokens(a, 1), 0.0, idle=False)
    h.add(tokens(a, 2), 0.1, idle=False)
    return h, sent


def test_a_step_without_results_passes_on_what_waits() -> None:
    h, sent = holding_a_token()
    h.add([], 0.2, idle=False)  # e.g. the only other request was cancelled
    h.add([], 0.3, idle=False)  # nothing waits: nothing is sent
    assert sent == [1, 1]


def test_take_empties_the_queue_for_an_engine_failure() -> None:
    h, sent = holding_a_token()
    assert [c.completion_tokens for _, c in h.take()] == [2]
    assert h.take() == []
    assert sent == [1]
