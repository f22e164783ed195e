"""Prompt-lookup drafts: what followed the latest earlier occurrence of the history's last tokens."""

from __future__ import annotations

import pytest

from edge_run.engine.drafts import COPY_RUN, KEPT, RETRY_EVERY, TRY_MOST, Company, Drafter, next_k, step_drafts
from edge_run.engine.slots import TILE


def test_drafts_continue_the_latest_earlier_occurrence_of_the_last_four_tokens() -> None:
    d = Drafter([1, 2, 3, 4, 5, 6, 7, 9, 1, 2, 3, 4, 8, 8, 1, 2, 3], most=8)
    assert d.draft(3) == [4, 8, 8]  # no 4-gram match for [8, 1, 2, 3]; the 2-gram [2, 3] last continued with 4
    d.push(4)
    assert d.draft(3) == [8, 8, 1]  # [1, 2, 3, 4] last continued with 8 (not with 5: that one is older)
    assert d.draft(1) == [8]
    assert d.draft(0) == []


def test_a_two_token_match_drafts_when_no_four_token_one_does() -> None:
    d = Drafter([5, 6, 7, 8, 0, 7], most=8)
    d.push(8)
    assert d.draft(2) == [0, 7]  # [7, 8] continued with 0, 7


def test_drafts_stop_at_the_end_of_the_history() -> None:
    d = Drafter([3, 4, 3, 4, 3], most=8)
    assert d.draft(8) == [4, 3]  # [4, 3] last continued at index 3: only two tokens follow it so far


def test_no_match_no_draft() -> None:
    assert Drafter([1, 2, 3, 4], most=8).draft(4) == []
    assert Drafter([], most=8).draft(4) == []


def test_drafting_grows_while_drafts_are_kept_and_stops_when_none_are() -> None:
    assert next_k(2, drafted=2, kept=2, most=8) == 4
    assert next_k(8, drafted=8, kept=8, most=8) == 8
    assert next_k(8, drafted=8, kept=3, most=8) == 3
    assert next_k(4, drafted=4, kept=0, most=8) == 0
    assert next_k(4, drafted=0, kept=0, most=8) == 4  # nothing to draft this step says nothing
    assert next_k(0, drafted=1, kept=1, most=8) == 2  # the retry of a request that had stopped drafting
    assert next_k(8, drafted=3, kept=3, most=8) == 8
    assert next_k(0, drafted=1, kept=1, most=0) == 0  # --draft-max 0


def test_a_copy_under_way_drafts_all_it_may_even_after_failures() -> None:
    """Six tokens that came before (``COPY_RUN``): as many as allowed (``most``, within ``fit``), whatever ``k``
    the failures left; a shorter match drafts ``k``: none after a failure but at each ``RETRY_EVERY``-th token."""
    assert COPY_RUN == 6
    copying = Drafter([1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6], most=8)
    assert copying.copying()
    assert step_drafts(copying, 0, 5, fit=16) == [7, 8, 9, 1, 2, 3, 4, 5]
    assert step_drafts(copying, 0, 5, fit=3) == [7, 8, 9]
    four = Drafter([1, 2, 3, 4, 5, 6, 7, 0, 3, 4, 5, 6], most=8)  # [3, 4, 5, 6] came before, [2, 3, 4, 5, 6] not
    assert not four.copying()
    assert step_drafts(four, 0, 5, fit=16) == []
    assert step_drafts(four, 0, RETRY_EVERY, fit=16) == [7]
    assert step_drafts(four, 2, 5, fit=16) == [7, 0]
    assert step_drafts(None, 8, 5, fit=16) == []


@pytest.mark.skipif(TILE > 1024, reason="no flash-attention tile to stay under on this CPU (slots.TILE)")
def test_a_step_stays_under_flash_attentions_tile_whatever_draft_max_says() -> None:
    """``--draft-max 100`` on a long copy: 62 drafts and the token, 63 rows. At 64 flash attention takes its tiled
    kernel, and the copy's answer would differ from the one without drafts."""
    history = list(range(1000, 1200)) * 2
    copying = Drafter(history[:-100], most=100)
    assert copying.copying()
    assert step_drafts(copying, 0, 5, fit=500) == history[100 : 100 + TILE - 2]


def test_a_filler_is_the_usual_draft_else_the_last_token_again() -> None:
    d = Drafter([5, 6, 7, 8, 0, 7], most=8)
    d.push(8)
    assert d.filler() == [0]
    assert Drafter([1, 2, 3], most=8).filler() == [3]
    assert Drafter([], most=8).filler() == []


def test_company_tries_both_ways_then_takes_the_faster_and_tries_the_other_ever_less_often() -> None:
    company, ways = Company(), []
    for _ in range(600):
        filler = company.wanted()
        ways.append(filler)
        company.observe(filler, 0.020 if filler else 0.030)  # the filler's steps are faster
    assert ways[:2] == [True, False]  # each way untried at first
    tries = [step for step, way in enumerate(ways, 1) if not way][1:]
    assert tries == [16, 48, 112, 240, 496]  # once in TRY_EVERY steps, then half as often while it loses
    assert 496 - 240 == TRY_MOST
    for _ in range(KEPT):  # the machine changes: alone is faster now
        company.observe(True, 0.050)
    assert company.wanted() is False


def test_a_try_that_gives_tokens_faster_comes_again_soon_until_its_way_is_taken() -> None:
    company, ways = Company(), []
    for step in range(1, 200):
        filler = company.wanted()
        ways.append(filler)
        alone = 0.030 if step < 60 else 0.010  # from step 60 on, a row alone is faster
        company.observe(filler, 0.020 if filler else alone)
    tries = [step for step, way in enumerate(ways, 1) if not way][1:]
    assert tries[:5] == [16, 48, 112, 128, 144]  # 112 won: the next tries come TRY_EVERY steps later
    assert not any(ways[144:159])  # from then on alone, till the filler's own try
    assert ways[159] is True


def test_company_judges_by_the_time_a_token() -> None:
    """A filler step that takes longer but is kept often gives tokens faster: a story that repeats itself."""
    company = Company()
    for _ in range(KEPT):
        company.observe(False, 0.020, 1)
        company.observe(True, 0.030, 2)  # 15 ms a token
    assert company.wanted() is True
    for _ in range(KEPT):
        company.observe(True, 0.030, 1)  # not kept any more
    assert company.wanted() is False


def test_company_judges_by_the_median_of_its_latest_steps() -> None:
    company = Company()
    for seconds in (0.030, 0.030, 0.030):
        company.observe(False, seconds)
    for seconds in (0.020, 0.200, 0.020):  # one slow step (the governor trying one thread) is not the rule
        company.observe(True, seconds)
    assert company.wanted() is True
