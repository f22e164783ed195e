"""Where a request's KV comes from: the whole blocks its slot holds, another slot's (copied when that saves
enough), or, for the same prompt again, all of it with its last row's logits kept (``Slot.replay``); and where the
idle refresh computes an answer whose prompt is kept so."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_run.engine.slots import COPY_GAIN, NARROW, most_stale, reusable, shared_rows, spares

if TYPE_CHECKING:
    from collections import deque

    from edge_run.engine.llama.context import Context
    from edge_run.engine.slots import Job, Slot, Whole

__all__ = ["goes_on", "refresh_slot", "set_aside", "take_prefix"]


def take_prefix(
    slots: list[Slot], slot: Slot, prompt: list[int], block: int, ctx: Context, replay: bool, whole: Whole = ()
) -> bool:
    """Give ``slot`` the longest usable prefix of ``prompt`` and set its ``n_prompt_done`` to its length: the rows a
    cold prompt computes alike (:func:`shared_rows`), or, where ``replay`` is allowed, the same prompt whole with
    ``slot.replay`` set.
    Another slot's (idle or busy) is copied when it holds ``COPY_GAIN`` tokens more; returns whether it was."""
    n = len(prompt)
    donor = max(slots, key=lambda s: reusable(s, prompt, block, whole))
    own, shared = reusable(slot, prompt, block, whole), reusable(donor, prompt, block, whole)
    copied = donor is not slot and shared - own >= COPY_GAIN
    if copied:
        ctx.seq_rm(slot.seq, 0, -1)
        ctx.seq_cp(donor.seq, slot.seq)
        slot.cache, slot.exact, slot.cut = list(donor.cache), donor.exact, donor.cut
        slot.final_logits = donor.final_logits
        own = shared
    slot.replay = slot.final_logits if own == n and replay else None
    slot.n_prompt_done = own if own < n or slot.replay is not None else shared_rows(slot, prompt, block, whole)
    return copied


def set_aside(slots: list[Slot], slot: Slot, ctx: Context) -> Slot:
    """The slot in which the idle refresh computes ``slot``'s finished answer, whose prompt is kept whole with its last
    row's logits for the same prompt again: the least recently used of its :func:`spares`, which takes a copy of the KV
    and the answer (then both are kept), or else ``slot``. Either way the prompt's final block is dropped there: the
    refresh computes it as the answer's next turn would. The copy counts as used just before ``slot``: a request that
    reuses neither takes it first."""
    spare = min(spares(slots, slot), key=lambda s: s.last_used, default=None)
    if spare is not None:
        ctx.seq_cp(slot.seq, spare.seq)
        spare.cache, spare.exact, spare.last_used = slot.cache[: slot.exact], slot.exact, slot.last_used - 1e-3
        spare.stale, spare.media, spare.cut, slot.stale, slot = slot.stale, slot.media, slot.cut, [], spare
    ctx.seq_rm(slot.seq, slot.pos(slot.exact), -1)
    del slot.cache[slot.exact :]
    slot.final_logits = None
    return slot


def refresh_slot(slots: list[Slot], block: int, ctx: Context) -> Slot:
    """The slot of the idle refresh's next call, ready for it: the most recently used idle slot with rows to compute
    again (:func:`most_stale`), or the one that :func:`set_aside` gives it; a ``NARROW`` prompt's rows made stale too
    (``Slot.widen``), and a tail under 64 rows backed up so that its call takes rows of ``exact`` again, as they were
    (``Slot.back_up``)."""
    slot = most_stale(slots, block)
    assert slot is not None  # the refresh runs only when one is due
    if slot.final_logits is not None:  # a prompt kept with its last row's logits, for the same prompt again
        slot = set_aside(slots, slot, ctx)
    if slot.cut == NARROW:  # its next turn, of 64 tokens or more, reuses only rows computed as WIDE
        ctx.seq_rm(slot.seq, 0, -1)
        slot.widen()
    if slot.back_up(block):
        ctx.seq_rm(slot.seq, slot.pos(slot.exact), -1)
    return slot


def goes_on(waiting: deque[Job], at: int, tokens: list[int]) -> bool:
    """Whether the first waiting request's prompt holds ``tokens`` at ``at``: the next turn of the answer that the
    idle refresh computes, which will reuse those rows (a request that comes during the call waits for it)."""
    job = waiting[0] if waiting else None  # read from llama.cpp's compute thread: the event loop appends meanwhile
    return job is not None and job.prompt[at : at + len(tokens)] == tokens
