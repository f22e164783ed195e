"""Where a request's KV comes from: the whole blocks its slot holds, another slot's (copied when that saves
enough), or, for the same prompt again, all of it with its last row's logits kept (``Slot.replay``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_run.engine.slots import COPY_GAIN, final_block, reusable

if TYPE_CHECKING:
    from edge_run.engine.llama.context import Context
    from edge_run.engine.slots import Slot, Whole

__all__ = ["take_prefix"]


def take_prefix(
    slots: list[Slot], slot: Slot, prompt: list[int], block: int, ctx: Context, replay: bool, whole: Whole = ()
) -> bool:
    """Give ``slot`` the longest usable prefix of ``prompt`` and set its ``n_prompt_done`` to its length: whole blocks
    before the prompt's final block, or, where ``replay`` is allowed, the same prompt whole with ``slot.replay`` set.
    Another slot's (idle or busy) is copied when it holds ``COPY_GAIN`` tokens more; returns whether it was."""
    n = len(prompt)
    donor = max(slots, key=lambda s: reusable(s, prompt, block, whole))
    own, shared = reusable(slot, prompt, block, whole), reusable(donor, prompt, block, whole)
    copied = donor is not slot and shared - own >= COPY_GAIN
    if copied:
        ctx.seq_rm(slot.seq, 0, -1)
        ctx.seq_cp(donor.seq, slot.seq)
        slot.cache, slot.exact, slot.wide = list(donor.cache), donor.exact, donor.wide
        slot.final_logits = donor.final_logits
        own = shared
    slot.replay = slot.final_logits if own == n and replay else None
    slot.n_prompt_done = own if own < n or slot.replay is not None else min(slot.exact, final_block(n, block, whole))
    return copied
