"""Slot state (the choice generating in each) and the pure planners the scheduler decides with: which
slot, which prefix, which moves."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from edge_run.engine.media import position, whole_spans

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from edge_run.engine.budget import Budget
    from edge_run.engine.drafts import Drafter
    from edge_run.engine.llama.sampler import Sampler
    from edge_run.engine.media import MediaSpan
    from edge_run.engine.text import TextStream
    from edge_run.engine.types import Chunk

__all__ = [
    "BLOCKS",
    "COPY_GAIN",
    "LEAD",
    "NARROW",
    "WIDE",
    "Job",
    "Slot",
    "Whole",
    "call_end",
    "calls",
    "count_runs",
    "cut_below",
    "cut_of",
    "final_block",
    "kept_rows",
    "most_stale",
    "next_block",
    "next_cut",
    "pick_slot",
    "plan_moves",
    "reusable",
    "shared_rows",
    "spares",
    "stale_tokens",
]

# Below this many tokens of extra prefix, re-evaluating them costs less than copying a slot's KV stream.
COPY_GAIN = 16

# Flash attention's Q tile on the CPU (ggml-cpu's GGML_FA_TILE_Q): on x86-64, a call of this many rows of a sequence
# or more takes the tiled kernels and computes each row alike, whatever the call's width and start
# (``test_thread_switch.py``). Not on ARM with i8mm: its matrix products take rows in pairs unless a call's row
# count is odd (ggml-cpu.c, ``num_rows_per_vec_dot``). There every block is a call of its own, and no cut is free.
TILE = 64 if platform.machine().lower() in {"x86_64", "amd64"} else 1 << 30

# How a prompt's rows are cut into ``llama_decode`` calls; a prompt reuses only rows of a slot cut the same way.
# ``WIDE`` (x86-64, text of ``TILE`` tokens or more): calls of ``TILE`` rows or more, which start anywhere.
# ``NARROW`` (x86-64, shorter text): one call below ``TILE`` rows; such calls compute a row alike from ``LEAD`` rows on.
# ``BLOCKS`` (media, other CPUs): blocks at fixed boundaries, each a call of its own below ``TILE`` rows.
BLOCKS, NARROW, WIDE = "blocks", "narrow", "wide"
# ggml-cpu (x86-64) takes K-quant products with its tiled kernel from 8 rows of a call (llama/model.py, ``TILED_FROM``):
# below 64 rows a row computes alike in any call of 8 rows or more, of any weights (bench/README.md)
LEAD = 8

# Rows ``(start, end)`` of a prompt that one ``llama_decode`` must hold whole: an image whose rows attend to each
# other (Gemma 3). A block boundary that falls inside one moves to its end.
Whole = tuple[tuple[int, int], ...]


@dataclass(eq=False)
class Job:
    """One choice of one request, as the engine thread sees it.

    For ``n > 1`` the first choice leads: its followers wait for its prompt, then copy its KV and
    sample from the same logits, so the prompt is evaluated once for all choices.
    """

    prompt: list[int]  # media rows as negative ids (see edge_run.engine.media)
    sampler: Sampler
    max_tokens: int
    stops: tuple[str, ...]
    deliver: Callable[[Chunk], None]
    index: int = 0
    top_logprobs: int | None = None
    budget: Budget | None = None  # a thinking budget, applied to every sampled token
    followers: list[Job] = field(default_factory=list)
    media: list[MediaSpan] = field(default_factory=list)  # the prompt's images and audio
    cancelled: bool = False  # set by the event loop, read by the engine thread

    @property
    def whole(self) -> Whole:
        return whole_spans(self.media)

    def close_samplers(self) -> None:
        """Free the sampler chains of this choice and its followers (a request that never got slots)."""
        for job in (self, *self.followers):
            job.sampler.close()


@dataclass(eq=False)
class Slot:
    """One sequence of the llama context: the KV it holds and the choice generating in it, if any."""

    seq: int
    cache: list[int] = field(default_factory=list)  # tokens whose KV this slot's sequence holds
    exact: int = 0  # leading positions of ``cache`` computed as whole blocks: the only ones reused
    cut: str = BLOCKS  # how its rows were computed (:func:`cut_of`): only a prompt cut the same way reuses them
    stale: list[int] = field(default_factory=list)  # dropped at release, to compute again as blocks when idle
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
    drafter: Drafter | None = None  # the job's token history, for drafts
    draft_k: int = 0  # drafts to try in the next step
    accepted: int = 0  # the job's drafts that its sampler agreed with
    rejected: int = 0
    # the logits of its prompt's last row while ``cache`` is that prompt, final block included: the same prompt
    # again starts from them (``replay``, for one sample) instead of computing the final block again
    final_logits: np.ndarray | None = None
    replay: np.ndarray | None = None
    media: list[MediaSpan] = field(default_factory=list)  # the images and audio among ``cache`` and ``stale``

    @property
    def idle(self) -> bool:
        return self.job is None

    @property
    def whole(self) -> Whole:
        return whole_spans(self.media)

    @property
    def rows_left(self) -> int:
        """Prompt rows still to compute: none for a prompt that replays its kept logits."""
        return 0 if self.job is None or self.replay is not None else len(self.job.prompt) - self.n_prompt_done

    def pos(self, i: int) -> int:
        """The KV position of ``cache`` row ``i``: media rows may take fewer positions than rows (M-RoPE)."""
        return position(self.media, i)

    def _free(self, block: int) -> bool:
        """Whether the stale tokens may be computed again in calls that start anywhere (``WIDE``)."""
        return self.cut == WIDE and block >= TILE

    def _tail(self, block: int) -> bool:
        """Whether the stale tokens are a free cut's tail of fewer than ``TILE`` whose call of ``TILE`` rows can start
        before ``exact`` (:meth:`back_up`), and half of it new at least: a call for a few tokens (an answer of one)
        would cost a request sent meanwhile more than it saves the next turn."""
        return self._free(block) and TILE // 2 <= len(self.stale) < TILE and self.exact + len(self.stale) >= TILE

    def refresh_rows(self, block: int) -> int:
        """The rows of the next refresh call past ``exact``, where the stale tokens start: the next whole block, or
        in a free cut ``TILE`` (a request sent meanwhile waits one such call at most), or its tail."""
        if self._free(block):
            return len(self.stale) if self._tail(block) else TILE
        return next_cut(self.exact, block, self.whole) - self.exact

    def refreshable(self, block: int) -> int:
        """The stale tokens the refresh will compute: whole blocks, or in a free cut calls of ``TILE`` and a tail; of a
        ``NARROW`` prompt, its rows too, as :meth:`widen` makes them stale."""
        if self.cut == NARROW:
            return _free_rows(0, self.exact + len(self.stale))
        if self._free(block):
            return _free_rows(self.exact, len(self.stale))
        return max(0, cut_below(self.exact + len(self.stale), block, self.whole) - self.exact)

    def widen(self) -> None:
        """Make a ``NARROW`` prompt's rows stale, its answer's after them, for the refresh to compute again as a
        ``WIDE`` prompt would: its next turn, of ``TILE`` tokens or more, reuses only such rows. The caller drops the
        KV, and the cache holds ``exact`` rows at most (no final block kept)."""
        self.stale[:0] = self.cache[: self.exact]
        self.cache, self.exact, self.cut = [], 0, WIDE

    def back_up(self, block: int) -> bool:
        """Move ``exact`` back before a :meth:`_tail`, so that its call has ``TILE`` rows: any call of ``TILE`` rows
        computes the rows it takes again just as they are. The caller drops the KV from ``exact`` on."""
        if not self._tail(block):
            return False
        self.exact -= TILE - len(self.stale)
        self.stale[:0] = self.cache[self.exact :]
        del self.cache[self.exact :]
        return True


def _free_rows(exact: int, n: int) -> int:
    """Of ``n`` stale tokens after ``exact``, those a free cut's refresh computes: calls of ``TILE``, and a tail as
    :meth:`Slot._tail` takes one."""
    whole = n // TILE * TILE
    return n if n - whole >= TILE // 2 and exact + n >= TILE else whole


def calls(rows: list[Slot], limit: int) -> list[list[Slot]]:
    """``rows`` in order, in as few calls of equal size (to one row) as hold ``limit`` rows at most."""
    n = -(-len(rows) // limit)
    return [rows[len(rows) * i // n : len(rows) * (i + 1) // n] for i in range(n)]


def count_runs(busy: list[bool]) -> int:
    """The number of runs of consecutive ``True`` in ``busy``."""
    return sum(b and (i == 0 or not busy[i - 1]) for i, b in enumerate(busy))


def pick_slot(slots: list[Slot], idle: list[Slot], prompt: list[int] | None, block: int, whole: Whole = ()) -> Slot:
    """The idle slot for a request: the longest cached prefix of ``prompt`` (``None`` for a choice that
    copies its leader's KV), then a slot next to the busy ones, then the least recently used."""

    def runs_with(extra: Slot) -> int:
        """How many runs of consecutive sequence ids the busy slots would form with ``extra`` busy too."""
        return count_runs([not s.idle or s is extra for s in slots])

    if prompt is None:
        return max(idle, key=lambda s: (-runs_with(s), -s.last_used))
    return max(idle, key=lambda s: (reusable(s, prompt, block, whole), -runs_with(s), -s.last_used))


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


def _snap(pos: int, whole: Whole) -> int:
    """``pos``, or the end of the whole span it falls inside."""
    return next((end for start, end in whole if start < pos < end), pos)


def _step(pos: int, block: int) -> int:
    """The blocks' width at ``pos``: ``block``, or below ``block`` an eighth of it. The short first blocks let a
    short prompt's shared start (the template, a system prompt) be reused; they cost a cold prompt of 40 tokens
    ~20% of its prefill, and a 1B model's ~1 s, so on x86-64 a text prompt takes none (:func:`cut_of`)."""
    return block if pos >= block else max(1, block // 8)


def _grid(pos: int, block: int) -> int:
    """The last block boundary at or before ``pos``, whole spans aside."""
    step = _step(pos, block)
    return pos // step * step


def next_cut(done: int, block: int, whole: Whole = ()) -> int:
    """The first block boundary after ``done``, moved past a whole span."""
    return _snap(_grid(done, block) + _step(done, block), whole)


def cut_below(pos: int, block: int, whole: Whole) -> int:
    """The last block boundary at or before ``pos``."""
    m = _grid(pos, block)
    while m > 0 and _snap(m, whole) > pos:
        m = _grid(m - 1, block)
    return _snap(m, whole) if m > 0 else 0


def final_block(n: int, block: int, whole: Whole = ()) -> int:
    """Where the final block of an ``n``-token prompt starts: the prompt is cut at block boundaries (:func:`_grid`),
    and the remainder joins the last block (from 128 tokens on, ``block`` to ``2 * block - 1`` of them; a prompt
    shorter than the first boundary is one block). A cut inside a whole span moves to its end, or before it where
    the span ends the prompt."""
    last = _grid(n, block)
    start = _snap(_grid(last - 1, block) if last > 0 else 0, whole)
    return start if start < n else cut_below(start - 1, block, whole)


def next_block(done: int, n: int, block: int, whole: Whole = ()) -> int:
    """Where the block that starts at ``done`` of an ``n``-token prompt ends."""
    return next_cut(done, block, whole) if done < final_block(n, block, whole) else n


def cut_of(prompt: list[int], block: int) -> str:
    """How ``prompt``'s rows are cut into calls: ``WIDE``, ``NARROW`` or ``BLOCKS`` (see there). Rows computed ``WIDE``
    or ``NARROW`` compute alike in any such call, so all of them are reused (:func:`shared_rows`), but only by a prompt
    cut the same way."""
    if block < TILE or min(prompt, default=0) < 0:
        return BLOCKS
    return WIDE if len(prompt) >= TILE else NARROW


def call_end(done: int, n: int, block: int, room: int, whole: Whole = (), *, cut: str = BLOCKS) -> int:
    """Where the ``llama_decode`` that computes an ``n``-token prompt from ``done`` ends: its block, and the blocks
    after it while each has ``TILE`` rows or more and the call ``room`` rows at most. Such blocks compute alike in
    one call or in several, and a wide call runs faster: flash attention's tiles are whole (bench/README.md).
    A ``WIDE`` cut takes ``room`` rows (``TILE`` at least) wherever they end, but never leaves fewer than ``TILE`` rows
    for the next call: a cold prompt runs llama-server's calls. A ``NARROW`` one takes the rest of its prompt."""
    if cut == NARROW:
        return n
    if cut == WIDE:
        rows = min(n - done, max(room, TILE))
        short = TILE - (n - done - rows)  # the rows the next call lacks, if any
        if 0 < short < TILE:
            rows = rows - short if rows - short >= TILE else n - done
        return done + rows
    end = next_block(done, n, block, whole)
    while end < n and end - done >= TILE:
        after = next_block(end, n, block, whole)
        if after - end < TILE or after - done > room:
            break
        end = after
    return end


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def reusable(slot: Slot, prompt: list[int], block: int, whole: Whole = ()) -> int:
    """How many leading tokens of ``prompt`` the slot's KV can give: the same prompt whole, with its last row's
    logits kept, or else :func:`shared_rows`."""
    if slot.final_logits is not None and slot.cache == prompt:  # the same prompt again, as a cold one computed it
        return len(prompt)
    return shared_rows(slot, prompt, block, whole)


def shared_rows(slot: Slot, prompt: list[int], block: int, whole: Whole = ()) -> int:
    """The leading rows of ``prompt`` that the slot computed as a cold ``prompt`` would (``exact``), cut the same way
    (:func:`cut_of`), and that a cold one would not compute in its last call: ``BLOCKS`` reuse whole blocks before
    ``prompt``'s final block, ``WIDE`` and ``NARROW`` any rows but the last ``TILE`` or ``LEAD``, which a call of their
    own computes again. ``whole`` is ``prompt``'s (the shared rows' spans are the same in both)."""
    cut = cut_of(prompt, block)
    if cut != slot.cut:  # its rows computed otherwise than a cold prompt's
        return 0
    common = _common_prefix(slot.cache, prompt)
    if cut == BLOCKS:
        return min(cut_below(common, block, whole), slot.exact, final_block(len(prompt), block, whole))
    return max(0, min(common, slot.exact, len(prompt) - (TILE if cut == WIDE else LEAD)))


def kept_rows(cut: str, start: int, end: int, n: int, block: int, whole: Whole = ()) -> int:
    """The rows of a call from ``start`` to ``end`` of an ``n``-token prompt that later prompts may reuse: a ``BLOCKS``
    call's whole blocks before the final one, a ``NARROW`` call's rows if it holds ``LEAD`` rows or more, all of
    a ``WIDE`` one."""
    if cut == BLOCKS:
        return max(0, min(end, final_block(n, block, whole)) - start)
    return end - start if cut == WIDE or end - start >= LEAD else 0


def spares(slots: list[Slot], slot: Slot) -> list[Slot]:
    """The other idle slots that the refresh of ``slot``'s answer may copy its KV into, to keep its prompt (with its
    last row's logits) for the same prompt again: any, or for a ``NARROW`` prompt only those that keep no such prompt
    of their own. Its answer's next turn may never come, and a burst of short requests would lose one of them to
    each refresh (8 short prompts cycling over 8 slots: every round some came cold)."""
    narrow = slot.cut == NARROW
    return [s for s in slots if s.idle and s is not slot and not (narrow and s.final_logits is not None)]


def _due(slots: list[Slot], slot: Slot, block: int) -> int:
    """The tokens the refresh will compute in ``slot``: none for a ``NARROW`` prompt kept whole whose other idle slots
    all keep one too (alone, it is computed again in its own slot)."""
    others = [s for s in slots if s.idle and s is not slot]
    if slot.cut == NARROW and slot.final_logits is not None and others and not spares(slots, slot):
        return 0
    return slot.refreshable(block)


def most_stale(slots: list[Slot], block: int) -> Slot | None:
    """The most recently used idle slot that has a whole block (or in a free cut, any token) to compute again."""
    found = (s for s in slots if s.idle and _due(slots, s, block))
    return max(found, key=lambda s: s.last_used, default=None)


def stale_tokens(slots: list[Slot], block: int) -> int:
    """Tokens of finished answers still to compute again (background work of an idle engine)."""
    return sum(_due(slots, s, block) for s in slots if s.idle)
