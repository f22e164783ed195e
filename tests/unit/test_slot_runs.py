"""Busy slots are kept on consecutive sequence ids: llama.cpp decodes those in one pass."""

from __future__ import annotations

import pytest

from edge_run.engine.slots import calls, count_runs, plan_moves


def busy(pattern: str) -> list[bool]:
    return [c == "x" for c in pattern]


@pytest.mark.parametrize(
    ("pattern", "runs"), [("....", 0), ("xx..", 1), ("..xx", 1), ("x.x.", 2), ("x..x", 2), (".x.x.x.x", 4)]
)
def test_runs_counts_groups_of_consecutive_busy_slots(pattern: str, runs: int) -> None:
    assert count_runs(busy(pattern)) == runs


@pytest.mark.parametrize(
    ("pattern", "moves"),
    [
        ("xxxx....", []),  # already one run
        ("...xx...", []),
        ("........", []),
        ("x.x.....", [(2, 1)]),  # one gap: the last one moves in
        ("x.....xx", [(0, 5)]),  # the run stays where most busy slots are
        ("xx.xx...", [(4, 2)]),
        (".x.x.x.x", [(5, 0), (7, 2)]),
        ("x.xx.x..", [(5, 1)]),
    ],
)
def test_moves_gather_busy_slots_into_one_run_with_the_fewest_moves(pattern: str, moves: list) -> None:
    assert plan_moves(busy(pattern)) == moves
    after = busy(pattern)
    for src, dst in moves:
        assert after[src] and not after[dst]
        after[src], after[dst] = False, True
    assert count_runs(after) <= 1
    assert sum(after) == sum(busy(pattern))


@pytest.mark.parametrize(
    ("rows", "sizes"), [(1, [1]), (7, [7]), (8, [4, 4]), (9, [4, 5]), (14, [7, 7]), (15, [5, 5, 5]), (16, [5, 5, 6])]
)
def test_generated_rows_go_in_the_fewest_equal_calls_within_the_row_limit(rows: int, sizes: list[int]) -> None:
    """A K-quant model on the CPU takes 7 rows a call (``Model.row_limit``); the calls keep the sequence order."""
    got = calls(list(range(rows)), 7)
    assert [len(c) for c in got] == sizes and [r for c in got for r in c] == list(range(rows))
