"""The step policy: slots, continuous batching, prompt-prefix reuse, drafts, cancellation.

Each step (run by the engine thread, :mod:`edge_run.engine.worker`) evaluates prompt blocks of admitted requests,
the shortest first, each first token handed over at once; then it decodes every generating slot's next token.

**The same request gives the same answer, cached or not.** llama.cpp's CPU kernels take other arithmetic by how
many rows of a sequence a ``llama_decode`` holds (flash attention tiles from 64 rows, and splits a lone row's KV
between threads), enough to flip a greedy choice. So the guarantee rests on the order of computation: every KV
position is computed by the same kind of call, a block of its own below 64 rows (on x86-64 any call of 8 to 63),
or any call of 64 rows or more, which computes each row alike.

- A prompt is cut into blocks at multiples of ``block`` (below it, of an eighth of it), the remainder in the final
  block (:func:`~edge_run.engine.slots.next_block`; never inside an image whose rows attend to each other), each a
  call of its own, but blocks of 64 rows or more share one (:func:`~edge_run.engine.slots.call_end`). Only whole
  blocks before a request's final block are reused (a slot's ``exact``). On x86-64 a text prompt is cut freely
  (:func:`~edge_run.engine.slots.cut_of`): from 64 tokens in calls of 64 rows or more, below in one call. Each reuses
  any shared row of a prompt cut its way but its last 64, or 8. The same prompt again reuses all of it, with its
  last row's logits, kept (:mod:`edge_run.engine.prefix`).
- Generated tokens are decoded one row per slot, a slot generating alone with its drafts
  (:mod:`edge_run.engine.drafts`), on ggml-cpu's reference kernels (``Context.decode``): flash attention walks
  each row's whole KV on one thread, and matrix products take rows one by one. So a row's logits depend neither
  on its place among its sequence's rows, nor on the thread count, nor on the neighbours: drafting, the thread
  governor and other requests change no answer. Where llama.cpp's CPU backend is out of reach, a lone row past
  256 KV cells (where flash attention would split its KV between threads) runs on one thread or with a filler
  draft, and K-quant rows in calls of 7 at most (``row_limit``), which compute alike there too.

Offloaded whole to a GPU, blocks are half a batch and nothing is drafted: the guarantee is the CPU's. Where a model's
first load found that this CPU computes rows otherwise (:mod:`edge_run.engine.llama.kernels`), what rests on that is
given up: reuse (``safe``), drafts and neighbours (a row a call), a lone row (``pad_lone``), or threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from edge_run.engine.drafts import Company, Drafter, next_k, step_drafts
from edge_run.engine.encoding import Encoder
from edge_run.engine.gather import gather
from edge_run.engine.media import rows_at, runs, unencoded
from edge_run.engine.output import token_chunk
from edge_run.engine.prefix import goes_on, refresh_slot, take_prefix
from edge_run.engine.slots import BLOCKS, Slot, call_end, calls, cut_of, kept_rows, most_stale, pick_slot, stale_tokens
from edge_run.engine.text import TextStream
from edge_run.engine.threads import CoreShare, Steps, ThreadGovernor, kind
from edge_run.engine.types import Chunk

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_run.engine.llama.context import Batch, Context, EmbdBatch
    from edge_run.engine.llama.model import Model
    from edge_run.engine.slots import Job
    from edge_run.errors import EdgeRunError

    Abort = Callable[[], bool] | None  # asked during a call: whether to stop it (Context.decode)

__all__ = ["PREFILL_BLOCK", "Scheduler"]

log = logging.getLogger(__name__)

PREFILL_BLOCK = 64  # slots.TILE: blocks of 64 rows share calls; a new turn computes its last 64 rows or more again
# The idle refresh starts this long after the latest answer ended: a burst's requests sent at once would stop its call
# (all but the answer's next turn do) and leave it to start again; an agent's next turn, a tool call later, finds some.
REFRESH_AFTER = 0.1


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
        block: int = PREFILL_BLOCK,
        max_drafts: int = 8,
        row_limit: int | None = None,
        lone_row_threads: int | None = 1,
        device_sampling: bool = False,
        threads: int = 1,
        adapt_threads: bool = True,
        cores: CoreShare | None = None,
        embd_batch: EmbdBatch | None = None,
        encode_beside: bool = False,
        safe: bool = False,
        pad_lone: bool = False,
    ) -> None:
        self.model, self.block = model, block
        # safe mode, where this CPU's kernels compute a prompt's rows otherwise in the calls shared here (``wide`` or
        # ``narrow``, llama/kernels.py): every prompt from its first token, a block a call, nothing refreshed
        self.safe = safe
        self.pad_lone = pad_lone  # a lone generated row takes a filler: here a call of one row computes otherwise
        self.max_drafts, self.row_limit = max_drafts, row_limit  # rows in a call of generated rows (None: any)
        self.device_sampling = device_sampling
        self.governor, self.company = ThreadGovernor(threads, adapt=adapt_threads), Company()
        self.cores = cores or CoreShare(threads)  # shared with the other loaded models
        self.member = self.cores.join()
        stoppable = not device_sampling  # a call that samples on the device is not done twice (threads.Steps)
        # a lone row's KV split between threads (:meth:`Context.splits_lone_row`, not on the reference kernels): on
        # ``lone_row_threads`` (one) it computes what a row among others does; None on a GPU
        self.steps = Steps(ctx, self.governor, self.cores, self.member, lone_row_threads, stoppable)
        self.encoder = Encoder(self.cores, self.member, beside=encode_beside)  # images and audio (a projector)
        self.ctx, self._slots = ctx, [Slot(seq=i) for i in range(slots)]
        self._batch, self._embd = batch, embd_batch  # embd_batch: media rows (a model with a projector)
        self.lock = threading.RLock()
        self.waiting: deque[Job] = deque()
        # /health's counters, written by the engine thread only (refreshed: answers computed again while idle)
        self.busy = self.tokens_generated = self.prompt_tokens_evaluated = self.tokens_refreshed = 0
        self.drafts_accepted = self.drafts_rejected = self.prefix_copies = self.slot_moves = 0

    @property
    def tokens_stale(self) -> int:
        return 0 if self.safe else stale_tokens(self._slots, self.block)

    def has_work(self) -> bool:
        """Whether a step would do anything: requests waiting or generating, or a finished answer to refresh now."""
        return bool(self.waiting) or self.busy != 0 or self.refresh_in() == 0.0

    def refresh_in(self) -> float | None:
        """Seconds until the idle refresh is due (0: now); None when no answer is left to refresh."""
        slot = None if self.safe else most_stale(self._slots, self.block)
        return None if slot is None else max(0.0, slot.last_used + REFRESH_AFTER - time.monotonic())

    def close(self) -> None:
        """Free the batches, once the engine thread has ended (and an encode beside it)."""
        for closing in [b for b in (self.encoder, self._batch, self._embd) if b is not None]:
            closing.close()

    def step(self, out: list[tuple[Job, Chunk]], now: Callable[[list[tuple[Job, Chunk]]], None] | None = None) -> None:
        for slot in self._slots:
            if slot.job is not None and slot.job.cancelled:
                self._release(slot)
        if not self._admit(out):  # requests often come in bursts: gather once the burst has a slot each
            self.slot_moves += gather(self._slots, self.ctx)  # the busy slots' sequence ids made consecutive
        budget = self._batch.capacity  # prompt rows per step, past the first block
        for slot in sorted(self._slots, key=lambda s: s.rows_left):  # the shortest first: the least time to first token
            slot.logit_index = -1
            if slot.job is not None and slot.next_token is None:
                budget -= self._prefill(slot, budget, out)
                if out and now is not None:  # first tokens go now, not after the other slots' prompts
                    now(out)
        if rows := [s for s in self._slots if s.next_token is not None]:  # in sequence order: see gather
            self._decode_rows(rows, out)
        elif budget == self._batch.capacity and self.encoder.under_way:  # nothing to do but wait for an encode
            self.encoder.wait()
        elif not self.busy and not self.waiting and self.refresh_in() == 0.0:
            self._refresh()

    def _prefill(self, slot: Slot, budget: int, out: list[tuple[Job, Chunk]]) -> int:
        """Compute the slot's next prompt blocks within ``budget`` rows (one at least); the final block's last row
        gives the first token. Returns the rows used."""
        job = slot.job
        assert job is not None
        n, used = len(job.prompt), 0
        if slot.replay is not None:  # the same prompt again: its last row's logits are kept
            self._sample(slot, out)
        while slot.n_prompt_done < n:
            start = slot.n_prompt_done
            trying = self.governor.for_step(kind(self.block, slot.pos(start))) != self.governor.threads  # or media
            end = call_end(
                start, n, self.block, 0 if job.media or trying or self.safe else budget - used, job.whole, cut=slot.cut
            )
            if used and used + end - start > budget:
                break
            if (span := unencoded(slot.media, start, end)) is not None:  # beside the engine while others generate
                others = any(s.next_token is not None for s in self._slots)
                if not self.encoder.ready(span, self.governor.threads, others):
                    break
                continue
            kept = kept_rows(slot.cut, start, end, n, self.block, job.whole)  # rows reused later
            slot.logit_index = self._decode_block(slot, job.prompt[start:end], kept, final=end == n)
            slot.n_prompt_done = end
            used += end - start
            if end == n:
                host = not slot.device_sampler and not slot.followers  # a prompt that replays on its own
                slot.final_logits = self.ctx.logits(slot.logit_index).copy() if host else None
                self._sample(slot, out)
        self.prompt_tokens_evaluated += used
        return used

    def _decode_block(self, slot: Slot, tokens: list[int], kept: int, *, final: bool, abort: Abort = None) -> int:
        """Decode ``tokens`` after the slot's cache, in a ``llama_decode`` of their own (one per run of text and of
        media rows); their first ``kept`` rows extend the reusable ``exact`` part. Returns the last row's index, or
        -1 where ``abort`` stopped a call: then none of them is kept."""
        start = len(slot.cache)
        batch: Batch | EmbdBatch = self._batch
        for a, b, media in runs(tokens):
            last, pos = final and b == len(tokens), slot.pos(start + a)
            if media and self._embd is not None:  # a projector's rows, with M-RoPE's positions
                rows, at = rows_at(slot.media, start + a, b - a)
                (batch := self._embd).fill(rows, pos, slot.seq, last_logits=last, sections=at)
            else:
                (batch := self._batch).fill(tokens[a:b], pos, slot.seq, last_logits=last)
            causal = all(s.causal for s in slot.media if s.start == start + a)  # Gemma 3: a whole span is a run
            if not self.steps.decode(batch, per=self.block, causal=causal, abort=abort):  # a final block: whole blocks
                self.ctx.seq_rm(slot.seq, slot.pos(start), -1)
                return -1
        slot.cache += tokens
        slot.exact = start + kept if slot.exact == start else slot.exact
        return batch.n - 1

    def _refresh(self) -> None:
        """Compute the next block of an idle slot's finished answer, so that its next turn reuses it. A request that
        comes meanwhile stops the call, but for that answer's next turn, which reuses its rows (:func:`goes_on`)."""
        slot = refresh_slot(self._slots, self.block, self.ctx)
        rows = slot.refresh_rows(self.block)
        at, tokens = len(slot.cache), slot.stale[:rows]

        def stop() -> bool:  # asked during the call
            mine = not self.cores.answering(but=self.member) and goes_on(self.waiting, at, tokens)
            return self.cores.answering() and not mine

        if self._decode_block(slot, tokens, rows, final=False, abort=stop) >= 0:
            del slot.stale[:rows]  # else a request came that the call stopped for
            self.tokens_refreshed += rows

    def _decode_rows(self, rows: list[Slot], out: list[tuple[Job, Chunk]]) -> None:
        """Decode each slot's sampled token (a lone slot's with its drafts, or a filler); keep the drafts its sampler
        agrees with. Beside others no slot drafts (on 4 streams one stream's 8 drafts would cost 32 rows): a call
        is one row per sequence, in calls of equal size within ``row_limit`` (:attr:`Model.row_limit`)."""
        batch, limit = self._batch, self.row_limit or self._batch.capacity
        fit = min(limit, self.ctx.n_ctx_seq - len(rows[0].cache)) - 1  # in a call and in the context
        drafter = rows[0].drafter if len(rows) == 1 else None  # only a slot generating alone drafts
        drafts = step_drafts(drafter, rows[0].draft_k, rows[0].generated, fit) if drafter else []
        if self.pad_lone and len(rows) == 1 and not drafts and fit > 0:  # every generated row in calls of 2 or more
            drafts = drafter.filler() if drafter else [rows[0].next_token or 0]
        at, before = rows[0].pos(len(rows[0].cache)), len(rows[0].cache)
        alone = drafter is not None and not drafts and fit > 0  # alone, or with a filler: the faster way (Company)
        filler = alone and self.company.wanted()
        drafts = drafter.filler() if filler and drafter else drafts
        start = time.perf_counter()
        for call in calls(rows, limit):
            batch.clear()
            for slot in call:
                assert slot.next_token is not None
                slot.logit_index = batch.add(slot.next_token, slot.pos(len(slot.cache)), slot.seq, True)
            for i, token in enumerate(drafts):
                batch.add(token, at + 1 + i, rows[0].seq, True)
            self.steps.decode(batch, reference=True)
            for slot in call:
                self._accept(slot, drafts, out)
        if alone:
            self.company.observe(filler, time.perf_counter() - start, len(rows[0].cache) - before)

    def _accept(self, slot: Slot, drafts: list[int], out: list[tuple[Job, Chunk]]) -> None:
        """Sample the slot's rows in order while each sample equals the token decoded after it."""
        real, first, accepted, rejected, kept = len(drafts), slot.logit_index, slot.accepted, slot.rejected, 0
        assert slot.next_token is not None
        slot.cache.append(slot.next_token)
        slot.next_token = None
        for i in range(len(drafts) + 1):
            slot.logit_index = first + i
            slot.accepted, slot.rejected = accepted + i, rejected + real - i
            self._sample(slot, out)
            if slot.job is None or i == len(drafts) or slot.next_token != drafts[i]:
                break
            slot.cache.append(drafts[i])
            slot.next_token = None
            kept += 1
        self.drafts_accepted += kept
        self.drafts_rejected += real - kept
        slot.draft_k = next_k(slot.draft_k, real, kept, self.max_drafts)
        if slot.job is not None:
            self.ctx.seq_rm(slot.seq, slot.pos(len(slot.cache)), -1)  # the rejected drafts

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
                    slot = pick_slot(self._slots, idle, job.prompt, self.block, job.whole)
                    idle.remove(slot)
                    self._start(slot, job)
                    for follower in job.followers:
                        fslot = pick_slot(self._slots, idle, None, self.block)
                        idle.remove(fslot)
                        self._start(fslot, follower, fork=True)
                        slot.followers.append(fslot)
                except Exception:
                    if all(s.job is not job for s in self._slots):
                        self.waiting.appendleft(job)  # in no slot yet: a failure ends it with the waiting
                    raise
        return admitted

    def _start(self, slot: Slot, job: Job, *, fork: bool = False) -> None:
        if fork:  # the KV arrives by copy from the leader once its prompt is done
            slot.n_prompt_done, slot.replay = len(job.prompt), None
        elif self.safe:  # every prompt from its first token
            slot.n_prompt_done, slot.replay = 0, None
        else:  # replayed logits feed one sample: not a leader's followers, nor the device's sampler
            replay = not job.followers and not self.device_sampling
            self.prefix_copies += take_prefix(self._slots, slot, job.prompt, self.block, self.ctx, replay, job.whole)
        keep, slot.media = 0 if fork else slot.n_prompt_done, job.media  # the cache's media up to keep, too
        self.ctx.seq_rm(slot.seq, slot.pos(keep), -1)
        del slot.cache[keep:]
        slot.exact = min(slot.exact, keep)
        slot.stale, slot.final_logits, slot.job, slot.cut = [], slot.replay, job, self._cut(job.prompt)
        # the device samples unless the host needs the logits: log-probabilities, forked choices, a grammar
        if self.device_sampling and not fork and job.top_logprobs is None and not job.followers:
            if job.sampler.spec.offloadable:
                self.ctx.set_sampler(slot.seq, job.sampler.ptr)
                slot.device_sampler = True
        slot.text = TextStream(job.stops)
        slot.cached, slot.generated, slot.next_token = keep, 0, None
        slot.drafter = None if slot.device_sampler or not self.max_drafts else Drafter(job.prompt, self.max_drafts)
        slot.draft_k, slot.accepted, slot.rejected = self.max_drafts, 0, 0
        self.busy += 1

    def _cut(self, prompt: list[int]) -> str:
        return BLOCKS if self.safe else cut_of(prompt, self.block)

    def _fork(self, leader: Slot, out: list[tuple[Job, Chunk]]) -> None:
        """Give each waiting follower the leader's prompt KV and a sample from the same logits."""
        for slot in [s for s in leader.followers if s.job is not None]:
            self.ctx.seq_cp(leader.seq, slot.seq)
            slot.cache, slot.exact, slot.cached = list(leader.cache), leader.exact, leader.cached
            slot.logit_index = leader.logit_index
            self._sample(slot, out)
            slot.logit_index = -1  # sampled: the step loop must not sample it again from the same logits
        leader.followers.clear()

    def _sample(self, slot: Slot, out: list[tuple[Job, Chunk]]) -> None:
        job = slot.job
        assert job is not None
        if slot.followers:
            self._fork(slot, out)
        row = slot.replay  # the same prompt again: the logits kept from its final block
        token = job.sampler.sample(self.ctx, slot.logit_index) if row is None else job.sampler.sample_row(row)
        token = job.budget.pick(token) if job.budget is not None else token
        self.tokens_generated += 1
        chunk = token_chunk(self.model, self.ctx, slot, job, token)
        slot.replay = None
        out.append((job, chunk))
        if chunk.finish_reason is not None:
            self._release(slot)
        elif slot.drafter is not None:
            slot.drafter.push(token)

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
        keep = len(slot.job.prompt) if slot.job is not None and slot.final_logits is not None else slot.exact
        slot.job = slot.text = slot.drafter = slot.next_token = slot.replay = None
        slot.last_used = time.monotonic()
        # what was decoded as rows is never reused: drop it now, and prefill it again once idle; only the latest
        # answer, so that a burst does not leave seconds of background work on a busy desktop
        self.busy -= 1
        for other in self._slots:
            other.stale = []
        slot.stale = slot.cache[slot.exact :]
        del slot.cache[keep:]  # the prompt's final block stays for the same prompt, until the refresh
        self.ctx.seq_rm(slot.seq, slot.pos(keep), -1)

    def fail_slots(self, out: list[tuple[Job, Chunk]], err: EdgeRunError) -> None:
        """End every request in a slot with ``err`` (unless ``out`` ends it already) and clear its slot's cache. Never
        raises: the engine thread must live on, on caches cleared of whatever a failed step left."""
        failed = {id(job) for job, chunk in out if chunk.finish_reason is not None}
        for slot in self._slots:
            job = slot.job
            if job is not None:
                if id(job) not in failed:
                    out.append((job, Chunk(finish_reason="error", error=err)))
                slot.cache.clear()
                slot.exact, slot.final_logits, slot.replay = 0, None, None
                try:
                    self.ctx.seq_rm(slot.seq, 0, -1)
                    self._release(slot)
                except Exception:  # the slot is forgotten even if llama.cpp cannot clear it
                    log.exception("clearing slot %d failed", slot.seq)
                    slot.job, slot.text, slot.next_token, slot.stale, slot.device_sampler = None, None, None, [], False
        self.busy = sum(not s.idle for s in self._slots)
