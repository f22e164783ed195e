"""Prompt blocks: cut at multiples of the block size (below it, of an eighth of it), the remainder in the final
block; only whole blocks before the final one are reused, so a cached prompt is computed by the same llama_decode
calls as a cold one."""

from __future__ import annotations

import time
from itertools import pairwise

import pytest

from edge_run.engine.llama.context import Batch
from edge_run.engine.llama.model import TILED_FROM
from edge_run.engine.prefix import refresh_slot
from edge_run.engine.scheduler import REFRESH_AFTER, Scheduler
from edge_run.engine.slots import (
    BLOCKS,
    LEAD,
    NARROW,
    TILE,
    WIDE,
    Job,
    Slot,
    call_end,
    cut_of,
    final_block,
    kept_rows,
    most_stale,
    next_block,
    pick_slot,
    reusable,
    spares,
    stale_tokens,
)
from edge_run.engine.threads import CoreShare

# calls of 64 rows or more compute each row alike on x86-64 only (slots.TILE)
X86 = pytest.mark.skipif(TILE != 64, reason="not x86-64")


def blocks(n: int, size: int, whole: tuple[tuple[int, int], ...] = ()) -> list[tuple[int, int]]:
    cut, at = [], 0
    while at < n:
        end = next_block(at, n, size, whole)
        cut.append((at, end))
        at = end
    return cut


def eighths(end: int) -> list[tuple[int, int]]:
    """The first blocks, of 8 rows (an eighth of 64), up to ``end``."""
    return [(a, a + 8) for a in range(0, end, 8)]


@pytest.mark.parametrize(
    ("n", "cut"),
    [
        (1, [(0, 1)]),
        (15, [(0, 15)]),  # shorter than two first blocks: one block
        (16, [(0, 8), (8, 16)]),
        (44, [*eighths(32), (32, 44)]),  # the remainder joins the last block
        (63, [*eighths(48), (48, 63)]),
        (64, eighths(64)),
        (127, [*eighths(56), (56, 127)]),
        (128, [*eighths(64), (64, 128)]),
        (191, [*eighths(64), (64, 191)]),
        (200, [*eighths(64), (64, 128), (128, 200)]),
    ],
)
def test_a_prompt_is_cut_at_multiples_of_the_block_and_the_final_block_takes_the_rest(n, cut) -> None:
    assert blocks(n, 64) == cut


def test_every_block_but_the_final_one_is_a_whole_block_at_an_aligned_start() -> None:
    for n in range(1, 700):
        cut = blocks(n, 64)
        assert cut[-1][0] == final_block(n, 64) and cut[-1][1] == n
        assert all(a % (b - a) == 0 and b - a == (64 if a >= 64 else 8) for a, b in cut[:-1])
        assert n < 128 or 64 <= cut[-1][1] - cut[-1][0] <= 127


@X86
@pytest.mark.parametrize(
    ("done", "n", "room", "end"),
    [
        (0, 3000, 512, 8),  # the first blocks, of 8 rows, take calls of their own
        (56, 127, 512, 127),  # a final block of 71 rows
        (64, 3000, 512, 576),  # eight blocks of 64
        (64, 3000, 100, 128),  # one block fills the room
        (64, 3000, 0, 128),  # one block at least
        (64, 200, 512, 200),  # the final block joins the call
        (2944, 3000, 512, 3000),
        (128, 650, 512, 576),  # the final block (576 to 650) would pass the room
    ],
)
def test_blocks_of_64_rows_or_more_share_a_call_within_the_room(done: int, n: int, room: int, end: int) -> None:
    assert call_end(done, n, 64, room) == end


def test_a_call_of_several_blocks_ends_at_their_cuts() -> None:
    for n in range(1, 700):
        cuts = {b for _, b in blocks(n, 64)}
        at = 0
        while at < n:
            at = call_end(at, n, 64, 300)
            assert at in cuts


def test_small_blocks_never_share_a_call() -> None:
    assert [call_end(a, 400, 16, 512) - a for a in (0, 16, 32, 384)] == [2, 16, 16, 16]


def test_a_longer_prompt_computes_the_shorter_ones_reusable_blocks_the_same_way() -> None:
    for short in range(1, 400):
        for long in (short + 1, short + 63, short + 200):
            reuse = final_block(short, 64)
            assert set(blocks(reuse, 64)) <= set(blocks(long, 64)) if reuse else True


def test_a_prompt_with_media_reuses_only_whole_shared_blocks_computed_as_blocks_before_its_final_one() -> None:
    prompt = [*range(299), -1]  # an image's row at the end
    slot = Slot(seq=0, cache=list(range(290)), exact=256)
    assert reusable(slot, prompt, 64) == 192  # 300 tokens: the final block starts at 192
    assert reusable(slot, [*prompt, *[1] * 100], 64) == 256  # as far as the slot computed blocks
    assert reusable(slot, [*range(130), -1, *range(131, 300)], 64) == 128  # they part inside the third block
    slot.exact = 64
    assert reusable(slot, prompt, 64) == 64
    assert reusable(Slot(seq=1), prompt, 64) == 0


@X86
def test_a_text_prompt_of_64_tokens_or_more_reuses_every_shared_exact_row_of_its_kind_but_its_last_64() -> None:
    """Such a prompt computes every row in calls of 64 rows or more (``WIDE``), its first 64 too: it reuses only a wide
    slot's rows; a shorter prompt (one call) or a media prompt (blocks) reuses none of them."""
    prompt = list(range(300))
    slot = Slot(seq=0, cache=list(range(290)), exact=256, cut=WIDE)
    assert reusable(slot, prompt, 64) == 236  # its last 64 rows are a call of their own, as in a cold prompt
    assert reusable(slot, prompt + [1] * 100, 64) == 256  # as far as the slot computed whole rows
    assert reusable(slot, [*range(130), 7, *range(131, 300)], 64) == 130  # they part at 130
    assert reusable(slot, [*range(130), -1, *range(131, 300)], 64) == 0  # with an image: blocks, of 8 below 64
    assert reusable(slot, list(range(100)), 64) == 36 and reusable(slot, list(range(64)), 64) == 0
    assert reusable(slot, list(range(63)), 64) == 0  # below 64 tokens: one call, below 64 rows
    slot.exact = 40  # any rows of a wide slot, even fewer than 64
    assert reusable(slot, prompt, 64) == 40
    blocky = Slot(seq=0, cache=list(range(290)), exact=64)  # a media prompt's blocks
    assert reusable(blocky, prompt, 64) == 0 and reusable(blocky, [*range(99), -1], 64) == 56
    assert reusable(Slot(seq=1), prompt, 64) == 0
    assert [cut_of(list(range(n)), 64) for n in (1, 63, 64, 3000)] == [NARROW, NARROW, WIDE, WIDE]
    assert cut_of([-1] * 200, 64) == cut_of([5, -1], 64) == BLOCKS
    assert cut_of(list(range(300)), 16) == BLOCKS  # blocks narrower than flash attention's tile


@X86
def test_a_text_prompt_under_64_tokens_is_one_call_and_reuses_any_shared_row_of_its_kind_but_its_last_8() -> None:
    """Below 64 rows a call of 8 rows or more computes each row alike (K-quants take ggml-cpu's tiled products from 8
    rows, other arithmetic): a cached prompt computes its last 8 rows or more in one call, and a call of fewer rows
    (a prompt under 8 tokens) leaves no row to reuse."""
    slot = Slot(seq=0, cache=list(range(40)), exact=40, cut=NARROW)
    assert reusable(slot, list(range(50)), 64) == 40
    assert reusable(slot, list(range(45)), 64) == 45 - LEAD  # a call of 8 rows, not of 5
    assert reusable(slot, [*range(20), 9, *range(21, 50)], 64) == 20
    assert reusable(slot, list(range(7)), 64) == 0 and reusable(slot, list(range(70)), 64) == 0  # WIDE
    assert call_end(20, 50, 64, 0, cut=NARROW) == 50  # the rest in one call, whatever the room
    assert kept_rows(NARROW, 0, 7, 7, 64) == 0 and kept_rows(NARROW, 0, 8, 8, 64) == kept_rows(WIDE, 0, 8, 70, 64) == 8
    assert kept_rows(BLOCKS, 0, 8, 30, 64) == 8 and kept_rows(BLOCKS, 16, 30, 30, 64) == 0  # the final block
    assert LEAD == TILED_FROM  # the tiled kernel's first row count (edge_run/engine/llama/model.py)


@X86
def test_a_short_prompt_and_its_answer_are_refreshed_as_a_long_prompt_would_compute_them() -> None:
    """Its next turn, of 64 tokens or more, reuses only rows computed in calls of 64 or more: the refresh computes the
    prompt's rows again too, once they make a call of 64 with the answer's (then its tail, as a wide slot's)."""
    slot = Slot(seq=0, cache=list(range(40)), exact=40, stale=list(range(100, 200)), cut=NARROW)
    assert slot.refreshable(64) == 128  # 140 rows: two calls, and a tail of 12 is too short for a call of its own
    assert Slot(seq=0, cache=list(range(40)), exact=40, stale=list(range(20)), cut=NARROW).refreshable(64) == 0
    assert Slot(seq=0, cache=list(range(40)), exact=40, stale=list(range(60)), cut=NARROW).refreshable(64) == 100
    slot.widen()
    assert (slot.cut, slot.cache, slot.exact, slot.stale) == (WIDE, [], 0, [*range(40), *range(100, 200)])
    assert slot.refreshable(64) == 128 and slot.refresh_rows(64) == 64


@X86
def test_a_short_prompt_kept_whole_is_refreshed_only_into_a_slot_that_keeps_no_prompt_whole() -> None:
    """Its refresh copies it aside (the prompt stays, with its last row's logits, for the same prompt again), but
    never over another prompt kept so: short requests cycling over the slots would lose one to each refresh."""
    short = Slot(seq=0, cache=list(range(40)), exact=40, stale=list(range(100, 200)), cut=NARROW, last_used=9.0)
    other = Slot(seq=1, cache=list(range(50, 90)), exact=40, cut=NARROW, last_used=1.0)
    short.final_logits = other.final_logits = object()  # type: ignore[assignment]  # kept: only whether counts
    assert spares([short, other], short) == [] and most_stale([short, other], 64) is None
    assert stale_tokens([short, other], 64) == 0
    assert most_stale([short], 64) is short  # alone, it is computed again in its own slot
    other.final_logits = None  # a refreshed copy, or nothing kept whole
    assert spares([short, other], short) == [other] and most_stale([short, other], 64) is short
    assert stale_tokens([short, other], 64) == 128
    wide = Slot(seq=0, cache=list(range(100)), exact=100, stale=list(range(500, 580)), cut=WIDE)
    other.final_logits = wide.final_logits = object()  # type: ignore[assignment]
    assert spares([wide, other], wide) == [other]  # a long prompt's answer is a conversation's: it evicts the LRU


@X86
@pytest.mark.parametrize(
    ("done", "n", "room", "end"),
    [
        (70, 3000, 512, 582),  # anywhere from 64 on
        (70, 600, 512, 536),  # it leaves 64 rows for the next call
        (70, 150, 512, 150),
        (70, 180, 40, 180),  # 64 rows at least, and 110 cannot be two calls: one
        (70, 200, 40, 134),  # 64 rows, which leave 66
        (70, 200, 100, 136),  # 100 would leave 30: 66, which leave 64
        (0, 3000, 512, 512),  # from the start: a cold prompt runs llama-server's calls
        (0, 150, 100, 86),  # 100 would leave 50: 86, which leave 64
    ],
)
def test_a_free_cut_takes_the_room_but_never_leaves_fewer_than_64_rows(done: int, n: int, room: int, end: int):
    assert call_end(done, n, 64, room, cut=WIDE) == end


@X86
def test_a_free_slot_refreshes_its_answer_in_calls_of_64_rows_and_its_tail_in_one_that_starts_before_it() -> None:
    """Never more than one call of 64 rows: a request sent meanwhile waits that long at most. A tail under 64 rows
    takes a call of 64 rows all the same, from before ``exact``: the rows it computes again come out as they were."""
    slot = Slot(seq=0, cache=list(range(300)), exact=300, stale=list(range(1000, 1170)), cut=WIDE)
    assert slot.refreshable(64) == 170 and slot.refresh_rows(64) == 64 and not slot.back_up(64)
    assert Slot(seq=0, cache=list(range(300)), exact=300, stale=list(range(150)), cut=WIDE).refreshable(64) == 128
    slot.cache += slot.stale[:128]  # two calls later
    slot.exact, slot.stale = 428, slot.stale[128:]
    assert slot.refreshable(64) == slot.refresh_rows(64) == 42 and most_stale([slot], 64) is slot
    assert slot.back_up(64)
    assert slot.exact == 406 and slot.cache == [*range(300), *range(1000, 1106)] and slot.stale == [*range(1106, 1170)]
    assert slot.refresh_rows(64) == 64
    short = Slot(seq=0, cache=list(range(20)), exact=20, stale=list(range(40)), cut=WIDE)  # no call of 64 rows fits
    assert short.refreshable(64) == 0 and not short.back_up(64) and most_stale([short], 64) is None
    few = Slot(seq=0, cache=list(range(300)), exact=300, stale=list(range(31)), cut=WIDE)  # under half a call new
    assert few.refreshable(64) == 0 and not few.back_up(64) and most_stale([few], 64) is None
    slot.cut, slot.exact = BLOCKS, 100  # not wide: whole blocks (100 is not a boundary: the next one is at 128)
    assert slot.refresh_rows(64) == 28
    slot.exact, slot.stale = 40, list(range(200))  # below 64: blocks of 8 first
    assert slot.refresh_rows(64) == 8 and slot.refreshable(64) == 152


def test_the_idle_refresh_waits_a_moment_after_the_latest_answer() -> None:
    """A burst's requests sent at once would stop the refresh's call (Scheduler.REFRESH_AFTER): it waits a moment;
    the engine thread sleeps until the refresh is due (``refresh_in``), then it is work."""
    scheduler = Scheduler(None, None, None, slots=2, cores=CoreShare(1))  # type: ignore[arg-type]  # not decoded
    assert scheduler.refresh_in() is None and not scheduler.has_work()
    slot = scheduler._slots[1]
    slot.stale = list(range(70))  # a whole block of the finished answer to compute again
    slot.last_used = time.monotonic() + 60  # the answer "ends" a minute from now: far from due
    assert 60 < scheduler.refresh_in() <= 60 + REFRESH_AFTER and not scheduler.has_work()
    slot.last_used = time.monotonic() - REFRESH_AFTER
    assert scheduler.refresh_in() == 0.0 and scheduler.has_work()
    slot.stale = slot.stale[:7]  # less than a block (the first is 8 rows): nothing to refresh
    assert scheduler.refresh_in() is None and not scheduler.has_work()


class _Computes:
    """A llama context that computes nothing: it drops rows as asked, and a call asks ``abort`` once ``arrive`` (what
    comes during the call) has run."""

    n_ctx_seq = 4096

    def __init__(self, arrive) -> None:
        self.arrive, self.dropped_from = arrive, []

    def splits_lone_row(self, pos: int) -> bool:
        return False

    def set_threads(self, threads: int) -> None:
        pass

    def seq_rm(self, seq: int, p0: int, p1: int = -1) -> None:
        self.dropped_from.append((seq, p0))

    def seq_cp(self, src: int, dst: int) -> None:
        self.copied = (src, dst)

    def decode(self, batch, *, causal: bool = True, abort=None, deadline=None, reference: bool = False) -> bool:
        self.arrive()
        return abort is None or not abort()


@X86  # calls of 64 rows from anywhere (a wide slot's refresh)
def test_a_request_stops_the_idle_refresh_call_under_way_but_the_next_turn_waits_for_it() -> None:
    """The refresh's call stops once a request comes (llama.cpp drops the rows it wrote, and so does the slot): a
    request never waits behind a call of 64 rows. But the answer's next turn, which will reuse those rows, lets the
    call end; the next refresh step computes stopped rows again."""
    cores = CoreShare(1)
    arrivals = []
    ctx, batch = _Computes(lambda: arrivals.pop(0)()), Batch(512)
    scheduler = Scheduler(None, ctx, batch, slots=2, cores=cores)  # type: ignore[arg-type]  # no model: no samples
    member = scheduler.member
    try:
        slot = scheduler._slots[0]
        slot.cache, slot.exact, slot.cut, slot.stale = list(range(300)), 300, WIDE, list(range(1000, 1200))
        slot.last_used = time.monotonic() - REFRESH_AFTER
        turn = Job(prompt=[*range(300), *range(1000, 1200), 7], sampler=None, max_tokens=1, stops=(), deliver=print)  # type: ignore[arg-type]

        def next_turn() -> None:  # as Worker.submit does
            scheduler.waiting.append(turn)
            cores.set_active(member, True)

        for arrive in (next_turn, lambda: cores.set_active(member, True), lambda: cores.set_active(cores.join(), True)):
            arrivals.append(arrive)
            cores.set_active(member, True, idle_work=True)  # the worker's refresh step
            scheduler.step([])
            scheduler.waiting.clear()  # seen to
            cores._active = {}  # every member idle again
        assert ctx.dropped_from == [(0, 364), (0, 364)] and scheduler.tokens_refreshed == 64
        assert (len(slot.cache), slot.exact, slot.stale) == (364, 364, list(range(1064, 1200)))
        arrivals.append(lambda: None)  # nothing comes
        scheduler.step([])
        assert scheduler.tokens_refreshed == 128 and slot.exact == 428 and slot.stale == list(range(1128, 1200))
    finally:
        batch.close()


def test_the_refresh_copies_a_kept_prompt_aside_and_a_request_that_reuses_neither_takes_the_copy_first() -> None:
    """A prompt kept with its last row's logits (for the same prompt again) stays; its answer is refreshed in a copy,
    in the least recently used other idle slot. The copy counts as used just before it, so that a request that
    reuses neither evicts the copy, not the kept prompt."""
    ctx = _Computes(lambda: None)
    kept = Slot(seq=0, cache=list(range(100)), exact=100, stale=list(range(500, 580)), cut=WIDE, last_used=10.0)
    kept.final_logits = object()  # type: ignore[assignment]  # kept logits: only whether there are any counts
    older = Slot(seq=1, cache=list(range(900, 950)), exact=50, cut=NARROW, last_used=5.0)
    assert refresh_slot([kept, older], 64, ctx) is older and ctx.copied == (0, 1)
    assert (older.cache, older.stale, older.cut) == (list(range(100)), list(range(500, 580)), WIDE)
    assert kept.final_logits is not None and kept.stale == [] and kept.cache == list(range(100))
    assert older.last_used < kept.last_used
    assert pick_slot([kept, older], [kept, older], list(range(2000, 2100)), 64) is older


def images(n: int, rows: int, gap: int, first: int) -> tuple[tuple[int, int], ...]:
    """Whole spans of ``rows`` (an image whose rows attend to each other) every ``rows + gap`` from ``first``."""
    return tuple((a, a + rows) for a in range(first, n - rows, rows + gap))


@pytest.mark.parametrize(("rows", "gap"), [(16, 5), (100, 30), (256, 11), (300, 1)])
def test_no_block_boundary_falls_inside_an_image_whose_rows_attend_to_each_other(rows: int, gap: int) -> None:
    """A cut inside a whole span moves to its end (or, where the span ends the prompt, before it); the cold cut of
    a longer prompt holds the shorter one's reusable blocks, and reuse never stops inside a span."""
    for first in (0, 1, 40, 63, 64, 90):
        for n in range(1, 900, 7):
            whole = images(n, rows, gap, first)
            cut = blocks(n, 64, whole)
            assert cut[0][0] == 0 and cut[-1][1] == n and all(a[1] == b[0] for a, b in pairwise(cut))
            assert not any(s < b < e for _, b in cut for s, e in whole), (n, whole, cut)
            reuse = final_block(n, 64, whole)
            for longer in (n + 1, n + 64, n + 300):
                more = images(longer, rows, gap, first)
                if tuple(sp for sp in more if sp[0] < n) != whole:  # an image cut off by the shorter one's end
                    continue
                assert set(blocks(reuse, 64, whole)) <= set(blocks(longer, 64, more)), (n, longer)
                prompt, slot = [*range(longer - 1), -1], Slot(seq=0, cache=list(range(n)), exact=reuse)
                got = reusable(slot, prompt, 64, more)
                assert got <= reuse and not any(s < got < e for s, e in more)


def test_a_whole_span_moves_the_cut_to_its_end() -> None:
    whole = ((50, 150),)  # the cuts at 56, 64 and 128 fall inside
    assert blocks(300, 64, whole) == [*eighths(48), (48, 150), (150, 192), (192, 300)]
    assert blocks(200, 64, whole) == [*eighths(48), (48, 150), (150, 200)]
    assert blocks(150, 64, whole) == [*eighths(48), (48, 150)]  # the span ends the prompt: before it
    assert blocks(170, 64, ((100, 170),)) == [*eighths(64), (64, 170)]
    slot = Slot(seq=0, cache=list(range(300)), exact=192)
    assert reusable(slot, list(range(120)) + [-5] * 200, 64, whole) == 48  # they part inside the span
    assert reusable(slot, list(range(280)) + [-5] * 200, 64, whole) == 192
