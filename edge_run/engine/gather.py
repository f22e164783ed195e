"""Busy slots into one run of consecutive sequence ids, by moving KV streams."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_run.engine.slots import COPY_GAIN, plan_moves

if TYPE_CHECKING:
    from edge_run.engine.llama.context import Context
    from edge_run.engine.slots import Slot

__all__ = ["gather"]


def gather(slots: list[Slot], ctx: Context) -> int:
    """Move busy slots into gaps between busy slots, so that their sequence ids stay consecutive.

    llama.cpp decodes a batch over per-slot KV streams in one pass only for consecutive sequence
    ids; each gap costs another pass per step (4 streams as {0, 2, 5, 7}: ~50% longer steps). A
    move copies one whole KV stream once (~5 ms for the default model at 2048 tokens). The request that
    finished in the gap keeps its prefix cache: it is copied first to the least recently used
    idle slot outside the run.
    """
    moves = plan_moves([not s.idle for s in slots])
    if not moves:
        return 0
    by_seq = {s.seq: s for s in slots}
    touched = {seq for move in moves for seq in move}
    spare = [s for s in slots if s.idle and s.seq not in touched]
    for src, dst in moves:
        mover, hole = by_seq[src], by_seq[dst]
        if hole.exact >= COPY_GAIN and spare:
            keep = min(spare, key=lambda s: s.last_used)
            if keep.last_used < hole.last_used:
                spare.remove(keep)
                ctx.seq_cp(hole.seq, keep.seq)
                keep.cache, keep.exact, keep.cut = list(hole.cache), hole.exact, hole.cut
                keep.stale, keep.final_logits, keep.media = hole.stale, hole.final_logits, hole.media
                keep.last_used = hole.last_used
        if mover.cache:
            ctx.seq_cp(mover.seq, hole.seq)
        else:
            ctx.seq_rm(hole.seq, 0, -1)
        if mover.device_sampler:
            ctx.set_sampler(mover.seq, None)
        # the slots trade sequence ids: the mover's state now lives in the gap's stream, and the
        # freed slot holds what the mover's stream still has
        mover.seq, hole.seq = hole.seq, mover.seq
        if mover.device_sampler and mover.job is not None:
            mover.job.sampler.fresh_copy()  # llama.cpp sets a chain up for one sequence only
            ctx.set_sampler(mover.seq, mover.job.sampler.ptr)
        hole.cache, hole.exact, hole.last_used, hole.cut = list(mover.cache), mover.exact, 0.0, mover.cut
        hole.stale, hole.final_logits, hole.media = [], mover.final_logits, mover.media
    slots.sort(key=lambda s: s.seq)
    return len(moves)
