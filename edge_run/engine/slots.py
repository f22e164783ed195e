"""Slot state (the choice generating in each) and the pure planners the scheduler decides with: which
slot, which prefix, which moves."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_run.engine.llama.sampler import Sampler
    from edge_run.engine.text import TextStream
    from edge_run.engine.types import Chunk

__all__ = ["COPY_GAIN", "Job", "Slot", "count_runs", "pick_slot", "plan_moves", "prefill_size", "reusable"]

# Below this many tokens of extra prefix, re-evaluating them costs less than copying a slot's KV stream.
COPY_GAIN = 16


@dataclass(eq=False)
class Job:
    """One choice of one request, as the engine thread sees it.

    For ``n > 1`` the first choice leads: its followers wait for its prompt, then copy its KV and
    sample from the same logits, so the prompt is evaluated once for all choices.
    """

    prompt: list[int]
    sampler: Sampler
    max_tokens: int
    stops: tuple[str, ...]
    deliver: Callable[[Chunk], None]
    index: int = 0
    top_logprobs: int | None = None
    followers: list[Job] = field(default_factory=list)
    cancelled: bool = False  # set by the event loop, read by the engine thread

    def close_samplers(self) -> None:
        """Free the sampler chains of this choice and its followers (a request that never got slots)."""
        for job in (self, *self.followers):
            job.sampler.close()


@dataclass(eq=False)
class Slot:
    """One sequence of the llama context: the KV it holds and the choice generating in it, if any."""

    seq: int
    cache: list[int] = field(default_factory=list)  # tokens whose KV this slot's sequence holds
    exact: int = 0  # leading positions of ``cache`` that were prefilled: the only ones reused
    stale: list[int] = field(default_factory=list)  # decoded as rows, dropped at release, to prefill when idle
    job: Job | None = None
    text: TextStream | None = None
    n_prompt_done: int = 0
    next_token: int | None = None  # sampled, not yet decoded
    generated: int = 0
    cached: int = 0
    last_used: float = 0.0
    logit_index: int = -1
    followers: list[Slot] = field(default_factory=list)  # slots waiting to fork from this one
    device_sampler: bool = False  # its job's sampler runs inside the decode graph (Context.set_sampler)

    @property
    def idle(self) -> bool:
        return self.job is None


def count_runs(busy: list[bool]) -> int:
    """The number of runs of consecutive ``True`` in ``busy``."""
    return sum(b and (i == 0 or not busy[i - 1]) for i, b in enumerate(busy))


def pick_slot(slots: list[Slot], idle: list[Slot], prompt: list[int] | None) -> Slot:
    """The idle slot for a request: the longest cached prefix of ``prompt`` (``None`` for a choice that
    copies its leader's KV), then a slot next to the busy ones, then the least recently used."""

    def runs_with(extra: Slot) -> int:
        """How many runs of consecutive sequence ids the busy slots would form with ``extra`` busy too."""
        return count_runs([not s.idle or s is extra for s in slots])

    if prompt is None:
        return max(idle, key=lambda s: (-runs_with(s), -s.last_used))
    return max(idle, key=lambda s: (reusable(s, prompt), -runs_with(s), -s.last_used))


def plan_moves(busy: list[bool]) -> list[tuple[int, int]]:
    """The fewest moves ``(from, to)`` that make the busy positions one run of consecutive positions.

    The run goes where the most busy positions already are (the lowest such place on a tie); each busy
    position outside it moves into a free position inside it.
    """
    n = sum(busy)
    if count_runs(busy) <= 1:
        return []
    start = max(range(len(busy) - n + 1), key=lambda w: (sum(busy[w : w + n]), -w))
    outside = [i for i, b in enumerate(busy) if b and not start <= i < start + n]
    holes = [i for i in range(start, start + n) if not busy[i]]
    return list(zip(outside, holes, strict=True))


def prefill_size(left: int, budget: int) -> int:
    """How many of ``left`` prompt tokens to prefill now, with ``budget`` tokens free in this step.

    Never one token alone, and never so many that one token is left over for a later chunk: a single
    row takes other arithmetic. The exception is a prompt with one token before its last.
    """
    take = min(left, budget)
    if left - take == 1:
        take -= 1
    return take if take >= min(2, left) else 0


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def reusable(slot: Slot, prompt: list[int]) -> int:
    """How many leading tokens of ``prompt`` the slot's KV can give: prefilled positions only."""
    return min(_common_prefix(slot.cache, prompt), slot.exact)
