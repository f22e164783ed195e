"""The engine thread: slots, continuous batching, prompt-prefix reuse, cancellation.

One thread owns the llama context. Each step it evaluates prompt chunks of newly admitted requests,
then decodes one batch holding the next token of every generating slot, samples, and hands the
results back to the event loop in a single ``call_soon_threadsafe``: at most once every
``HANDOVER_INTERVAL`` while tokens flow, at once for a request's first token and its last.

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

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge_run.engine.llama import Batch, Context, Model, Sampler
from edge_run.engine.text import TextStream
from edge_run.engine.threads import CoreShare, ThreadGovernor
from edge_run.errors import EdgeRunError, EngineFailure

__all__ = ["Chunk", "Handover", "Job", "Scheduler"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class TokenLogprob:
    """One generated token with its log-probability and the most likely alternatives."""

    token: bytes
    logprob: float
    top: list[tuple[bytes, float]]


@dataclass(slots=True)
class Chunk:
    """What one step produced for one choice. ``finish_reason`` set means that choice is done."""

    index: int = 0
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    error: EdgeRunError | None = None
    stop: str | None = None  # the stop string that ended the choice (finish_reason "stop" without end-of-generation)


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


@dataclass(eq=False)
class _Slot:
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
    followers: list[_Slot] = field(default_factory=list)  # slots waiting to fork from this one
    device_sampler: bool = False  # its job's sampler runs inside the decode graph (Context.set_sampler)

    @property
    def idle(self) -> bool:
        return self.job is None


# While streams run, steps' results are handed to the event loop at most this often (seconds). Every
# hand-over wakes the event loop and writes to each client's socket; on a small CPU that work stalls
# llama.cpp's compute threads, so a fast model at one stream on 2 cores decodes ~5% faster when
# 5-7 steps share a hand-over. A first token, a finished choice, and any step slower than this go at once.
HANDOVER_INTERVAL = 0.05

# Prefill chunks stay below flash attention's tile (64 query rows): from there on the CPU takes a
# tiled kernel with other arithmetic. An idle engine prefills a finished answer again (for the next
# turn to reuse) one such chunk a step, so a request that arrives meanwhile waits for one chunk at most.
PREFILL_CHUNK = 63

# Below this many tokens of extra prefix, re-evaluating them costs less than copying a slot's KV stream.
COPY_GAIN = 16

# What a request sees when the engine fails under it; the cause goes to the log, not to the client
FAILED = "inference failed; the server log has the details"


def _runs(busy: list[bool]) -> int:
    """The number of runs of consecutive ``True`` in ``busy``."""
    return sum(b and (i == 0 or not busy[i - 1]) for i, b in enumerate(busy))


def _plan_moves(busy: list[bool]) -> list[tuple[int, int]]:
    """The fewest moves ``(from, to)`` that make the busy positions one run of consecutive positions.

    The run goes where the most busy positions already are (the lowest such place on a tie); each busy
    position outside it moves into a free position inside it.
    """
    n = sum(busy)
    if _runs(busy) <= 1:
        return []
    start = max(range(len(busy) - n + 1), key=lambda w: (sum(busy[w : w + n]), -w))
    outside = [i for i, b in enumerate(busy) if b and not start <= i < start + n]
    holes = [i for i in range(start, start + n) if not busy[i]]
    return list(zip(outside, holes, strict=True))


def _prefill_size(left: int, budget: int) -> int:
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


class Scheduler:
    """Runs every request of one model through one llama context on one thread."""

    def __init__(
        self,
        model: Model,
        ctx: Context,
        *,
        slots: int,
        batch: int,
        loop: asyncio.AbstractEventLoop,
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
        self._cores = cores or CoreShare(threads)  # shared with the other loaded models
        self._member = self._cores.join()
        self.ctx = ctx
        self.n_ctx_seq = ctx.n_ctx_seq
        self._slots = [_Slot(seq=i) for i in range(slots)]
        self._batch = Batch(batch)
        self._loop = loop
        self._cond = threading.Condition()
        self._waiting: deque[Job] = deque()
        self._calls: deque[tuple[Callable[[], Any], asyncio.Future[Any]]] = deque()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="edge-run-engine", daemon=True)
        # counters read by /health; plain ints written by the engine thread only
        self.busy = 0
        self.steps = 0
        self.tokens_generated = 0
        self.prompt_tokens_evaluated = 0
        self.tokens_refreshed = 0  # answers prefilled again while idle, for the next turn
        self.prefix_copies = 0
        self.slot_moves = 0

    # -- event-loop side -------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._cond:
            self._waiting.append(job)
            self._cond.notify()

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the engine thread between two steps (for work that needs llama.cpp compute)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        with self._cond:
            self._calls.append((fn, future))
            self._cond.notify()
        return await future

    def wake(self) -> None:
        with self._cond:
            self._cond.notify()

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def tokens_stale(self) -> int:
        """Tokens of finished answers still to prefill again (background work of an idle engine)."""
        return sum(len(slot.stale) for slot in self._slots if slot.idle)

    @property
    def n_slots(self) -> int:
        return len(self._slots)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()
        self._batch.close()

    # -- engine thread -----------------------------------------------------------------

    def _run(self) -> None:
        handover = Handover(lambda out: self._loop.call_soon_threadsafe(_dispatch, out), HANDOVER_INTERVAL)
        failed_in_a_row = 0
        while True:
            with self._cond:
                while (
                    not self._stopping
                    and not self._waiting
                    and not self._calls
                    and self.busy == 0
                    and self._stale() is None
                ):
                    self._cores.set_active(self._member, False)
                    self._cond.wait()
                if self._stopping:
                    break
                self._cores.set_active(self._member, True)
                calls = list(self._calls)
                self._calls.clear()
            for fn, future in calls:
                try:
                    result, error = fn(), None
                except Exception as exc:
                    result, error = None, exc
                self._loop.call_soon_threadsafe(_settle, future, result, error)
            out: list[tuple[Job, Chunk]] = []
            try:
                self._step(out)
                handover.add(out, time.monotonic(), idle=self.busy == 0)
                failed_in_a_row = 0
            except Exception:  # keep serving: fail only the requests in flight
                log.exception("engine step failed")
                failed_in_a_row += 1
                # a second failure in a row may be the waiting requests' own (one that cannot even start):
                # then they end too, instead of being tried again and again
                self._fail_all(handover.take() + out, EngineFailure(FAILED), waiting=failed_in_a_row > 1)
        self._cores.set_active(self._member, False)
        self._fail_all(handover.take(), EngineFailure("server is shutting down"))

    def _step(self, out: list[tuple[Job, Chunk]]) -> None:
        for slot in self._slots:
            if slot.job is not None and slot.job.cancelled:
                self._release(slot)
        if not self._admit(out):  # requests often come in bursts: gather once the burst has a slot each
            self._gather()
        # every busy slot's row always fits; prompt chunks share what is left
        budget = self._batch.capacity - self.busy
        rows: list[_Slot] = []
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
            if not self.busy and not self._waiting:
                self._refresh()
            return
        # deterministic: each row alone, so that no neighbour changes the batch's width
        for group in [[slot] for slot in rows] if self.deterministic else [rows]:
            self._decode_rows(group)
            for slot in group:
                self._sample(slot, out)

    def _prefill(self, slot: _Slot, budget: int) -> int:
        """Evaluate the slot's prompt, short of its last token, in chunks within ``budget``; returns the tokens used."""
        job = slot.job
        assert job is not None
        used = 0
        while take := _prefill_size(len(job.prompt) - 1 - slot.n_prompt_done, min(budget - used, self.prefill_chunk)):
            start = slot.n_prompt_done
            self._prefill_tokens(slot, job.prompt[start : start + take])
            slot.n_prompt_done = start + take
            used += take
        self.prompt_tokens_evaluated += used
        return used

    def _prefill_tokens(self, slot: _Slot, tokens: list[int]) -> None:
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
            self._cores.release(self._member)
        self.steps += 1
        slot.cache += tokens
        if len(tokens) >= 2 and slot.exact == start:
            slot.exact = len(slot.cache)

    def _stale(self) -> _Slot | None:
        """The most recently used idle slot that has tokens to prefill again, if any."""
        slots = [s for s in self._slots if s.idle and len(s.stale) >= 2]
        return max(slots, key=lambda s: s.last_used) if slots else None

    def _refresh(self) -> None:
        """Prefill the next chunk of an idle slot's stale tokens, so that its next turn reuses them."""
        slot = self._stale()
        if slot is None:
            return
        take = _prefill_size(len(slot.stale), self.prefill_chunk)
        self._prefill_tokens(slot, slot.stale[:take])
        del slot.stale[:take]
        self.tokens_refreshed += take

    def _decode_rows(self, rows: list[_Slot]) -> None:
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
            self._cores.release(self._member)
        if threads == wanted:  # a step cut short by the core share says nothing about the machine
            self.governor.observe(threads, len(rows), time.perf_counter() - start)
        self.steps += 1

    def _use_threads(self, wanted: int) -> int:
        """Set the context to ``wanted`` threads, or fewer: this model's free share of the cores (held until
        :meth:`CoreShare.release`)."""
        threads = self._cores.acquire(self._member, wanted)
        if threads != self.threads_now:
            self.ctx.set_threads(threads)
            self.threads_now = threads
        return threads

    def _admit(self, out: list[tuple[Job, Chunk]]) -> bool:
        """Give waiting requests idle slots, in order; whether any request got one."""
        admitted = False
        with self._cond:
            while self._waiting:
                job = self._waiting[0]
                if job.cancelled:
                    _close_samplers(self._waiting.popleft())
                    continue
                idle = [s for s in self._slots if s.idle]
                if len(idle) < 1 + len(job.followers):
                    break
                admitted = True
                self._waiting.popleft()
                try:
                    # the longest cached prefix, then a slot next to the busy ones, then the least recently used
                    slot = max(idle, key=lambda s: (_reusable(s, job.prompt), -self._runs_with(s), -s.last_used))
                    idle.remove(slot)
                    self._start(slot, job)
                    for follower in job.followers:
                        fslot = max(idle, key=lambda s: (-self._runs_with(s), -s.last_used))
                        idle.remove(fslot)
                        self._start(fslot, follower, fork=True)
                        slot.followers.append(fslot)
                except Exception:
                    if all(s.job is not job for s in self._slots):
                        self._waiting.appendleft(job)  # in no slot yet: _fail_all ends it with the waiting
                    raise
        return admitted

    def _runs_with(self, extra: _Slot) -> int:
        """How many runs of consecutive sequence ids the busy slots would form with ``extra`` busy too."""
        return _runs([not s.idle or s is extra for s in self._slots])

    def _gather(self) -> None:
        """Move busy slots into gaps between busy slots, so that their sequence ids stay consecutive.

        llama.cpp decodes a batch over per-slot KV streams in one pass only for consecutive sequence
        ids; each gap costs another pass per step (4 streams as {0, 2, 5, 7}: ~50% longer steps). A
        move copies one whole KV stream once (~5 ms for the default model at 2048 tokens). The request that
        finished in the gap keeps its prefix cache: it is copied first to the least recently used
        idle slot outside the run.
        """
        moves = _plan_moves([not s.idle for s in self._slots])
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
                self.ctx.set_sampler(mover.seq, mover.job.sampler)
            hole.cache, hole.exact, hole.last_used = list(mover.cache), mover.exact, 0.0
            hole.stale = []
            self.slot_moves += 1
        self._slots.sort(key=lambda s: s.seq)

    def _start(self, slot: _Slot, job: Job, *, fork: bool = False) -> None:
        if fork:  # the KV arrives by copy from the leader once its prompt is done
            keep = 0
            slot.n_prompt_done = len(job.prompt)
        else:
            own = _reusable(slot, job.prompt)
            donor = max(self._slots, key=lambda s: _reusable(s, job.prompt))
            shared = _reusable(donor, job.prompt)
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
                self.ctx.set_sampler(slot.seq, job.sampler)
                slot.device_sampler = True
        slot.text = TextStream(job.stops)
        slot.cached = keep
        slot.generated = 0
        slot.next_token = None
        self.busy += 1

    def _fork(self, leader: _Slot, out: list[tuple[Job, Chunk]]) -> None:
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

    def _sample(self, slot: _Slot, out: list[tuple[Job, Chunk]]) -> None:
        job, text = slot.job, slot.text
        assert job is not None and text is not None
        if slot.followers:
            self._fork(slot, out)
        token = job.sampler.sample(self.ctx, slot.logit_index)
        self.tokens_generated += 1
        logprobs = None
        if job.top_logprobs is not None:
            lp, top = self.ctx.logprobs(slot.logit_index, token, job.top_logprobs)
            piece = self.model.piece(token, special=True)
            logprobs = [TokenLogprob(piece, lp, [(self.model.piece(t, special=True), v) for t, v in top])]
        finish: str | None = None
        emitted = ""
        if self.model.is_eog(token):
            finish = "stop"
            logprobs = None
        else:
            slot.generated += 1
            emitted = text.push(self.model.piece(token))
            if text.stopped:
                finish = "stop"
            elif slot.generated >= job.max_tokens or len(slot.cache) >= self.n_ctx_seq:
                finish = "length"
            else:
                slot.next_token = token
        if finish is not None:
            emitted += text.flush()
        chunk = Chunk(
            index=job.index,
            text=emitted,
            completion_tokens=slot.generated,
            finish_reason=finish,
            prompt_tokens=len(job.prompt),
            cached_tokens=slot.cached,
            logprobs=logprobs,
            stop=text.stop,
        )
        out.append((job, chunk))
        if finish is not None:
            self._release(slot)

    def _release(self, slot: _Slot) -> None:
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

    def _fail_all(self, out: list[tuple[Job, Chunk]], err: EdgeRunError, *, waiting: bool = True) -> None:
        """End every request in flight (and, unless ``waiting`` is False, every waiting one) with ``err``.

        Never raises: the thread must live on. A failed step affects the requests in the slots only; the
        waiting ones are kept for the next steps, on caches cleared of whatever the step left.
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
        with self._cond:
            while waiting and self._waiting:
                job = self._waiting.popleft()
                _close_samplers(job)
                out.append((job, Chunk(finish_reason="error", error=err)))
        if out and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(_dispatch, list(out))
            out.clear()


class Handover:
    """Gathers the steps' results and passes them on in one call, at most once per ``interval``.

    A step that has a first token (time to first token) or a finished choice passes everything on at
    once, and so does a step that has nothing new or leaves the engine idle: nothing waits for a later
    step that may never come.
    """

    def __init__(self, send: Callable[[list[tuple[Job, Chunk]]], object], interval: float) -> None:
        self._send = send
        self._interval = interval
        self._pending: list[tuple[Job, Chunk]] = []
        self._sent_at = float("-inf")

    def add(self, out: list[tuple[Job, Chunk]], now: float, *, idle: bool) -> None:
        self._pending += out
        if not self._pending:
            return
        urgent = any(chunk.finish_reason is not None or chunk.completion_tokens <= 1 for _, chunk in out)
        if urgent or idle or not out or now - self._sent_at >= self._interval:
            self._send(self.take())
            self._sent_at = now

    def take(self) -> list[tuple[Job, Chunk]]:
        pending, self._pending = self._pending, []
        return pending


def _reusable(slot: _Slot, prompt: list[int]) -> int:
    """How many leading tokens of ``prompt`` the slot's KV can give: prefilled positions only."""
    return min(_common_prefix(slot.cache, prompt), slot.exact)


def _close_samplers(job: Job) -> None:
    for j in (job, *job.followers):
        j.sampler.close()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _dispatch(out: list[tuple[Job, Chunk]]) -> None:
    for job, chunk in out:
        job.deliver(chunk)
