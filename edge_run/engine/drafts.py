"""Drafts from the text so far (prompt lookup): the tokens that followed the latest earlier occurrence of
the last few tokens. Edits, quotes and code repeat long runs of their prompt; a step that decodes a
sampled token with its drafts keeps every draft the sampler then agrees with.

How many: all it may while the text's last 6 tokens came before it (a copy under way), so a copy resumes
6 tokens after a change (a renamed name, a changed word); on a shorter match, as many as were kept the step
before, none after a failure but one now and then (ordinary chat repeats a few tokens often, 6 seldom).

Drafts are a function of the token history only, so a request drafts the same way every time it is sent.
"""

from __future__ import annotations

__all__ = ["COPY_RUN", "RETRY_EVERY", "Drafter", "next_k", "step_drafts"]

# The n-grams looked up, longest first: a longer match predicts better, a shorter one matches more often.
NGRAMS = (4, 2)
# A request whose drafts failed drafts again once in this many tokens.
RETRY_EVERY = 16
# A run of this many tokens that came before is a copy under way: it drafts all it may, whatever failed before.
COPY_RUN = 6


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
    but one now and then)."""
    if drafter is None:
        return []
    return drafter.draft(min(drafter.most if drafter.copying() else k or int(generated % RETRY_EVERY == 0), fit))
