"""Drafts from the text so far (prompt lookup): the tokens that followed the latest earlier occurrence of
the last few tokens. Edits, quotes and code repeat long runs of their prompt; a step that decodes a
sampled token with its drafts keeps every draft the sampler then agrees with.

How many: all it may while the text's last 6 tokens came before it (a copy under way), so a copy resumes
6 tokens after a change (a renamed name, a changed word); on a shorter match, as many as were kept the step
before, none after a failure but one now and then (ordinary chat repeats a few tokens often, 6 seldom).

Drafts are a function of the token history only. Whether a step with none takes a filler draft (the usual one,
else the token again) is not: :class:`Company` takes the way whose latest steps gave tokens faster. Either way the
row's logits are the same, so the answer is too. A lone row runs on the governor's threads on ggml-cpu's reference
kernels (``Context.reference``); without them past 256 KV cells on one thread (its KV is not split, so its logits do
not depend on the thread count), where a filler's two rows take the governor's threads with no split.
"""

from __future__ import annotations

import statistics
from collections import deque

from edge_run.engine.slots import TILE

__all__ = ["COPY_RUN", "RETRY_EVERY", "Company", "Drafter", "next_k", "step_drafts"]

# The n-grams looked up, longest first: a longer match predicts better, a shorter one matches more often.
NGRAMS = (4, 2)
# A request whose drafts failed drafts again once in this many tokens.
RETRY_EVERY = 16
# A run of this many tokens that came before is a copy under way: it drafts all it may, whatever failed before.
COPY_RUN = 6
# Company tries the way it does not take once in this many steps at first, and half as often each time that try loses
# again, down to once in ``TRY_MOST``; it keeps this many steps of each way.
TRY_EVERY, TRY_MOST, KEPT = 16, 256, 5


class Drafter:
    """An index of every n-gram of a token history to where it last continued; ``most``: the drafts a step may
    take (``--draft-max``)."""

    def __init__(self, history: list[int], most: int) -> None:
        self.most = most
        self.history: list[int] = []
        self._next: dict[tuple[int, ...], int] = {}
        for token in history:
            self.push(token)

    def push(self, token: int) -> None:
        """Append ``token``: each n-gram that ends just before it now continues here."""
        h = self.history
        end = len(h)
        for n in NGRAMS:
            if end >= n:
                self._next[tuple(h[end - n : end])] = end
        h.append(token)

    def _at(self) -> int:
        """Where the longest n-gram of :data:`NGRAMS` that ends the history continued the latest time before; 0 for
        none."""
        h = self.history
        for n in NGRAMS:
            if len(h) > n and (at := self._next.get(tuple(h[-n:]))) is not None:
                return at
        return 0

    def copying(self) -> bool:
        """Whether the history's last :data:`COPY_RUN` tokens came before it: a copy under way."""
        h, at = self.history, self._at()
        return at >= COPY_RUN and h[at - COPY_RUN : at] == h[-COPY_RUN:]

    def filler(self) -> list[int]:
        """One draft however weak, to keep a lone row company: the usual one, else the last token again."""
        return self.draft(1) or self.history[-1:]

    def draft(self, k: int) -> list[int]:
        """Up to ``k`` tokens that followed the latest earlier occurrence of the history's end."""
        at = self._at()
        if not at or k <= 0:
            return []
        drafts = self.history[at : at + k]
        media = next((i for i, t in enumerate(drafts) if t < 0), None)  # an image's rows: never drafted
        return drafts if media is None else drafts[:media]


def next_k(k: int, drafted: int, kept: int, most: int) -> int:
    """How many tokens to draft next: twice as many after all ``drafted`` were kept, as many as were kept
    after some were, none after none were (drafts cost a row each, and ordinary chat seldom repeats)."""
    if not drafted:
        return k
    return min(most, max(k, 2 * drafted) if kept == drafted else kept)


def step_drafts(drafter: Drafter | None, k: int, generated: int, fit: int) -> list[int]:
    """A slot's drafts for this step, ``fit`` at most: all it may while it copies, else ``k`` (none after failures,
    but one now and then). With its token, fewer than ``TILE`` rows, whatever ``--draft-max`` says: in a call of
    ``TILE`` rows of a sequence or more, flash attention takes its tiled kernel, whose arithmetic differs from a
    row's alone, so an answer would change with drafting on."""
    if drafter is None:
        return []
    wanted = drafter.most if drafter.copying() else k or int(generated % RETRY_EVERY == 0)
    return drafter.draft(min(wanted, fit, TILE - 2))


class Company:
    """Whether a lone row (a slot with no draft this step) goes with a filler draft or alone: the way whose latest
    steps gave tokens faster, the other tried now and then, since the machine's load and the text change both. A
    filler costs a row and is kept now and then (the usual draft: a story that repeats itself); alone, a row runs on
    the governor's threads on the reference kernels, else past 256 cells on one thread (on a 2-core Intel Xeon the
    filler's step took 0.92x of that for SmolLM2-135M, 0.67x for Gemma 3 270M). A try that loses costs a row, so
    a way that keeps losing is tried ever less often: tried once in 16 steps, fillers cost 128-token answers of
    ordinary chat about 4% (bench/README.md)."""

    def __init__(self) -> None:
        # each way's latest steps: (seconds, tokens given)
        self._steps: dict[bool, deque[tuple[float, int]]] = {way: deque(maxlen=KEPT) for way in (True, False)}
        self._every, self._due = TRY_EVERY, TRY_EVERY
        self._trying = False

    def _pace(self, way: bool) -> float:
        """Seconds a token of ``way``'s latest steps: the median step (a step slowed by the governor's try is not the
        rule) over the mean tokens a step (a filler is kept or not); 0 for a way never taken."""
        steps = self._steps[way]
        return statistics.median(s for s, _ in steps) * len(steps) / sum(t for _, t in steps) if steps else 0.0

    def _best(self) -> bool:
        return min((True, False), key=self._pace)

    def wanted(self) -> bool:
        """Whether this step takes a filler (untried ways first)."""
        self._due -= 1
        self._trying = self._due <= 0
        return not self._best() if self._trying else self._best()

    def observe(self, filler: bool, seconds: float, tokens: int = 1) -> None:
        """A step of that way took ``seconds`` and gave ``tokens`` (its row's, and a filler's where it was kept)."""
        self._steps[filler].append((seconds, max(1, tokens)))
        if self._trying:  # a try that gave tokens faster than the way taken comes again soon, one that did not later
            won = seconds / max(1, tokens) < self._pace(not filler)
            self._every = TRY_EVERY if won else min(TRY_MOST, 2 * self._every)
            self._due, self._trying = self._every, False
