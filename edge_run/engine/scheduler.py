"""The step policy: slots, continuous batching, prompt-prefix reuse, cancellation.

Each step (run by the engine thread, :mod:`edge_run.engine.worker`) evaluates prompt chunks of newly
admitted requests, then decodes one batch holding the next token of every generating slot, and samples.

**The same request gives the same answer, cached or not.** llama.cpp's CPU kernels take other
arithmetic for one row of a sequence than for several, and by how many rows there are (tinyBLAS from
two rows, flash attention's tiled path from 64), and the logits differ by up to about 1.0, enough to
flip a greedy choice. So every position is computed in one of two fixed ways, whatever the cache holds:

- a prompt's tokens but its last are *prefilled*, in chunks of 2 to ``PREFILL_CHUNK`` tokens, each
  chunk in a ``llama_decode`` of its own (mixed with other sequences, llama.cpp would split it into
  rows of one);
- a prompt's last token and every generated token are decoded as one row of their sequence.

A slot's ``exact`` counts the leading positions of its cache that were prefilled; only those are
reused, so a cached prompt evaluates the same arithmetic as a cold one. A lone row at 512 or more
KV cells takes flash attention's split-KV kernel, and a row beside other sequences' rows does not:
with ``deterministic``, each slot's row is decoded alone, so that no neighbour can change its kernel.

A model offloaded whole to a GPU prefills in chunks up to the batch size instead (``prefill_chunk``):
there a llama_decode costs a kernel launch per operation whatever its width, and the GPU kernels switch
at other widths (CUDA's quantized matrix products at 8 rows), so small chunks would cost time and buy
no sameness. The same-answer guarantee is the CPU's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from edge_run.engine.output import token_chunk
from edge_run.engine.slots import COPY_GAIN, Slot, pick_slot, plan_moves, prefill_size, reusable
from edge_run.engine.text import TextStream
from edge_run.engine.threads import CoreShare, ThreadGovernor
from edge_run.engine.types import Chunk

if TYPE_CHECKING:
    from edge_run.engine.llama.context import Batch, Context
    from edge_run.engine.llama.model import Model
    from edge_run.engine.slots import Job
    from edge_run.errors import EdgeRunError

__all__ = ["PREFILL_CHUNK", "Scheduler"]

log = logging.getLogger(__name__)

# Prefill chunks stay below flash attention's tile (64 query rows): from there on the CPU takes a
# tiled kernel with other arithmetic. An idle engine prefills a finished answer again (for the next
# turn to reuse) one such chunk a step, so a request that arrives meanwhile waits for one chunk at most.
PREFILL_CHUNK = 63


class Scheduler:
    """Every request of one model through one llama context: the slots, and the requests waiting for one.

    Only the engine thread calls it, but for ``waiting``: the event loop appends to it under ``lock``.
    """

    def __init__(
        self,
        model: Model,
        ctx: Context,
        batch: Batch,
        *,
        slots: int,
        deterministic: bool = False,
        prefill_chunk: int = PREFILL_CHUNK,
        device_sampling: bool = False,
        threads: int = 1,
        adapt_threads: bool = True,
        cores: CoreShare | None = None,
    ) -> None:
        self.model = model
        self.deterministic = deterministic
        self.prefill_chunk = prefill_chunk
        self.device_sampling = device_sampling
        self.governor = ThreadGovernor(threads, adapt=adapt_threads)
        self.threads_now = threads  # what the context was last set to (the governor may be trying another)
        self.cores = cores or CoreShare(threads)  # shared with the other loaded models
        self.member = self.cores.join()
        self.ctx = ctx
        self._slots = [Slot(seq=i) for i in range(slots)]
        self._batch = batch
        self.lock = threading.RLock()
        self.waiting: deque[Job] = deque()
        # counters read by /health; plain ints written by the engine thread only
        self.busy = 0
        self.tokens_generated = 0
        self.prompt_tokens_evaluated = 0
        self.tokens_refreshed = 0  # answers prefilled again while idle, for the next turn
        self.prefix_copies = 0
        self.slot_moves = 0

    @property
    def queued(self) -> int:
        return len(self.waiting)

    @property
    def tokens_stale(self) -> int:
        """Tokens of finished answers still to prefill again (background work of an idle engine)."""
        return sum(len(slot.stale) for slot in self._slots if slot.idle)

    def has_work(self) -> bool:
        """Whether a step would do anything: requests waiting or generating, or a finished answer to refresh."""
        return bool(self.waiting) or self.busy != 0 or self._stale() is not None

    def close(self) -> None:
        """Free the batch, once the engine thread has ended."""
        self._batch.close()

    def step(self, out: list[tuple[Job, Chunk]]) -> None:
        for slot in self._slots:
            if slot.job is not None and slot.job.cancelled:
                self._release(slot)
        if not self._admit(out):  # requests often come in bursts: gather once the burst has a slot each
            self._gather()
        # every busy slot's row always fits; prompt chunks share what is left
        budget = self._batch.capacity - self.busy
        rows: list[Slot] = []
        for slot in self._slots:  # in sequence order: llama.cpp splits a batch at every gap in the ids
            slot.logit_index = -1
            job = slot.job
            if job is None:
                continue
            if slot.next_token is None and slot.n_prompt_done < len(job.prompt) - 1:
                budget -= self._prefill(slot, budget)
            if slot.next_token is not None or slot.n_prompt_done == len(job.prompt) - 1:
                rows.append(slot)
        if not rows:
            if not self.busy and not self.waiting:
                self._refresh()
            return
        # deterministic: each row alone, so that no neighbour changes the batch's width
        for group in [[slot] for slot in rows] if self.deterministic else [rows]:
            self._decode_rows(group)
            for slot in group:
                self._sample(slot, out)

    def _prefill(self, slot: Slot, budget: int) -> int:
        """Evaluate the slot's prompt, short of its last token, in chunks within ``budget``; returns the tokens used."""
        job = slot.job
        assert job is not None
        used = 0
        while take := prefill_size(len(job.prompt) - 1 - slot.n_prompt_done, min(budget - used, self.prefill_chunk)):
            start = slot.n_prompt_done
            self._prefill_tokens(slot, job.prompt[start : start + take])
            slot.n_prompt_done = start + take
            used += take
        self.prompt_tokens_evaluated += used
        return used

    def _prefill_tokens(self, slot: Slot, tokens: list[int]) -> None:
        """Decode ``tokens`` after the slot's cache, in a ``llama_decode`` of their own."""
        start = len(slot.cache)
        batch = self._batch
        batch.clear()
        for i, token in enumerate(tokens):
            batch.add(token, start + i, slot.seq, False)
        self._use_threads(self.governor.threads)
        try:
            self.ctx.decode(batch)
        finally:
            self.cores.release(self.member)
        slot.cache += tokens
        if len(tokens) >= 2 and slot.exact == start:
            slot.exact = len(slot.cache)

    def _stale(self) -> Slot | None:
        """The most recently used idle slot that has tokens to prefill again, if any."""
        slots = [s for s in self._slots if s.idle and len(s.stale) >= 2]
        return max(slots, key=lambda s: s.last_used) if slots else None

    def _refresh(self) -> None:
        """Prefill the next chunk of an idle slot's stale tokens, so that its next turn reuses them."""
        slot = self._stale()
        if slot is None:
            return
        take = prefill_size(len(slot.stale), self.prefill_chunk)
        self._prefill_tokens(slot, slot.stale[:take])
        del slot.stale[:take]
        self.tokens_refreshed += take

    def _decode_rows(self, rows: list[Slot]) -> None:
        """Decode one row for each slot: its sampled token, or its prompt's last token."""
        batch = self._batch
        batch.clear()
        for slot in rows:
            job = slot.job
            assert job is not None
            if slot.next_token is not None:
                token, slot.next_token = slot.next_token, None
            else:
                token = job.prompt[-1]
                slot.n_prompt_done = len(job.prompt)
                self.prompt_tokens_evaluated += 1
            slot.logit_index = batch.add(token, len(slot.cache), slot.seq, True)
            slot.cache.append(token)
        wanted = self.governor.for_step()
        threads = self._use_threads(wanted)
        start = time.perf_counter()
        try:
            self.ctx.decode(batch)
        finally:
            self.cores.release(self.member)
        if threads == wanted:  # a step cut short by the core share says nothing about the machine
            self.governor.observe(threads, len(rows), time.perf_counter() - start)

    def _use_threads(self, wanted: int) -> int:
        """Set the context to ``wanted`` threads, or fewer: this model's free share of the cores (held until
        :meth:`CoreShare.release`)."""
        threads = self.cores.acquire(self.member, wanted)
        if threads != self.threads_now:
            self.ctx.set_threads(threads)
            self.threads_now = threads
        return threads

    def _admit(self, out: list[tuple[Job, Chunk]]) -> bool:
        """Give waiting requests idle slots, in order; whether any request got one."""
        admitted = False
        with self.lock:
            while self.waiting:
                job = self.waiting[0]
                if job.cancelled:
                    self.waiting.popleft().close_samplers()
                    continue
                idle = [s for s in self._slots if s.idle]
                if len(idle) < 1 + len(job.followers):
                    break
                admitted = True
                self.waiting.popleft()
                try:
                    slot = pick_slot(self._slots, idle, job.prompt)
                    idle.remove(slot)
                    self._start(slot, job)
                    for follower in job.followers:
                        fslot = pick_slot(self._slots, idle, None)
                        idle.remove(fslot)
                        self._start(fslot, follower, fork=True)
                        slot.followers.append(fslot)
                except Exception:
                    if all(s.job is not job for s in self._slots):
                        self.waiting.appendleft(job)  # in no slot yet: a failure ends it with the waiting
                    raise
        return admitted

    def _gather(self) -> None:
        """Move busy slots into gaps between busy slots, so that their sequence ids stay consecutive.

        llama.cpp decodes a batch over per-slot KV streams in one pass only for consecutive sequence
        ids; each gap costs another pass per step (4 streams as {0, 2, 5, 7}: ~50% longer steps). A
        move copies one whole KV stream once (~5 ms for the default model at 2048 tokens). The request that
        finished in the gap keeps its prefix cache: it is copied first to the least recently used
        idle slot outside the run.
        """
        moves = plan_moves([not s.idle for s in self._slots])
        if not moves:
            return
        by_seq = {s.seq: s for s in self._slots}
        touched = {seq for move in moves for seq in move}
        spare = [s for s in self._slots if s.idle and s.seq not in touched]
        for src, dst in moves:
            mover, hole = by_seq[src], by_seq[dst]
            if hole.exact >= COPY_GAIN and spare:
                keep = min(spare, key=lambda s: s.last_used)
                if keep.last_used < hole.last_used:
                    spare.remove(keep)
                    self.ctx.seq_cp(hole.seq, keep.seq)
                    keep.cache, keep.exact, keep.last_used = list(hole.cache), hole.exact, hole.last_used
                    keep.stale = hole.stale
            if mover.cache:
                self.ctx.seq_cp(mover.seq, hole.seq)
            else:
                self.ctx.seq_rm(hole.seq, 0, -1)
            if mover.device_sampler:
                self.ctx.set_sampler(mover.seq, None)
            # the slots trade sequence ids: the mover's state now lives in the gap's stream, and the
            # freed slot holds what the mover's stream still has
            mover.seq, hole.seq = hole.seq, mover.seq
            if mover.device_sampler and mover.job is not None:
                mover.job.sampler.fresh_copy()  # llama.cpp sets a chain up for one sequence only
                self.ctx.set_sampler(mover.seq, mover.job.sampler.ptr)
            hole.cache, hole.exact, hole.last_used = list(mover.cache), mover.exact, 0.0
            hole.stale = []
            self.slot_moves += 1
        self._slots.sort(key=lambda s: s.seq)

    def _start(self, slot: Slot, job: Job, *, fork: bool = False) -> None:
        if fork:  # the KV arrives by copy from the leader once its prompt is done
            keep = 0
            slot.n_prompt_done = len(job.prompt)
        else:
            own = reusable(slot, job.prompt)
            donor = max(self._slots, key=lambda s: reusable(s, job.prompt))
            shared = reusable(donor, job.prompt)
            if donor is not slot and shared - own >= COPY_GAIN:
                # another slot (idle or busy) holds a longer prefix: copy its KV rather than recompute
                self.ctx.seq_rm(slot.seq, 0, -1)
                self.ctx.seq_cp(donor.seq, slot.seq)
                slot.cache, slot.exact = list(donor.cache), donor.exact
                own = shared
                self.prefix_copies += 1
            # the last prompt token is always evaluated as a row of its own: its logits start the generation
            keep = min(own, len(job.prompt) - 1)
            if len(job.prompt) - 1 - keep == 1 and keep > 0:
                keep -= 1  # the token before it is prefilled with one more, never alone
            slot.n_prompt_done = keep
        self.ctx.seq_rm(slot.seq, keep, -1)
        del slot.cache[keep:]
        slot.exact = min(slot.exact, keep)
        slot.stale = []
        slot.job = job
        # the device samples unless the host needs the logits: log-probabilities, choices forked from
        # the same logits, a grammar
        if self.device_sampling and not fork and job.top_logprobs is None and not job.followers:
            if job.sampler.spec.offloadable:
                self.ctx.set_sampler(slot.seq, job.sampler.ptr)
                slot.device_sampler = True
        slot.text = TextStream(job.stops)
        slot.cached = keep
        slot.generated = 0
        slot.next_token = None
        self.busy += 1

    def _fork(self, leader: Slot, out: list[tuple[Job, Chunk]]) -> None:
        """Give each waiting follower the leader's prompt KV and a sample from the same logits."""
        for slot in leader.followers:
            if slot.job is None:
                continue
            self.ctx.seq_cp(leader.seq, slot.seq)
            slot.cache, slot.exact = list(leader.cache), leader.exact
            slot.cached = leader.cached
            slot.logit_index = leader.logit_index
            self._sample(slot, out)
            slot.logit_index = -1  # sampled: the step loop must not sample it again from the same logits
        leader.followers.clear()

    def _sample(self, slot: Slot, out: list[tuple[Job, Chunk]]) -> None:
        job = slot.job
        assert job is not None
        if slot.followers:
            self._fork(slot, out)
        token = job.sampler.sample(self.ctx, slot.logit_index)
        self.tokens_generated += 1
        chunk = token_chunk(self.model, self.ctx, slot, job, token)
        out.append((job, chunk))
        if chunk.finish_reason is not None:
            self._release(slot)

    def _release(self, slot: Slot) -> None:
        if slot.device_sampler:  # before the chain is freed: the context holds it
            self.ctx.set_sampler(slot.seq, None)
            slot.device_sampler = False
        if slot.job is not None:
            slot.job.sampler.close()
        for follower in slot.followers:  # never forked: nothing to copy from any more
            follower_job = follower.job
            if follower_job is not None and not follower_job.cancelled:
                self._release(follower)
                follower_job.cancelled = True
        slot.followers.clear()
        slot.job = None
        slot.text = None
        slot.next_token = None
        slot.last_used = time.monotonic()
        # what was decoded as rows is never reused: drop it now, and prefill it again once idle; only
        # the latest answer, so that a burst does not leave seconds of background work on a busy desktop
        self.busy -= 1
        for other in self._slots:
            other.stale = []
        slot.stale = slot.cache[slot.exact :]
        del slot.cache[slot.exact :]
        self.ctx.seq_rm(slot.seq, slot.exact, -1)

    def fail_slots(self, out: list[tuple[Job, Chunk]], err: EdgeRunError) -> None:
        """End every request in a slot with ``err`` (unless ``out`` ends it already) and clear its slot's cache.

        Never raises: the engine thread must live on, on caches cleared of whatever a failed step left.
        """
        failed = {id(job) for job, chunk in out if chunk.finish_reason is not None}
        for slot in self._slots:
            job = slot.job
            if job is not None:
                if id(job) not in failed:
                    out.append((job, Chunk(finish_reason="error", error=err)))
                slot.cache.clear()
                slot.exact = 0
                try:
                    self.ctx.seq_rm(slot.seq, 0, -1)
                    self._release(slot)
                except Exception:  # the slot is forgotten even if llama.cpp cannot clear it
                    log.exception("clearing slot %d failed", slot.seq)
                    slot.job, slot.text, slot.next_token, slot.stale = None, None, None, []
                    slot.device_sampler = False
        self.busy = sum(not s.idle for s in self._slots)
