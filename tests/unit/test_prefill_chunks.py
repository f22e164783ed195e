"""Prompt chunks never hold one token alone: a single row takes other kernels than several."""

from __future__ import annotations

import pytest

from edge_run.engine.slots import prefill_size


@pytest.mark.parametrize(
    ("left", "budget", "take"),
    [
        (100, 512, 100),  # all of it
        (100, 40, 40),
        (41, 40, 39),  # 40 would leave one token for a chunk of its own
        (3, 2, 0),  # 2 would leave one; 1 is alone: wait for a step with room
        (2, 1, 0),
        (2, 2, 2),
        (1, 512, 1),  # a prompt with one token before its last: the only single-token chunk
        (1, 0, 0),
        (0, 512, 0),
    ],
)
def test_prefill_size(left: int, budget: int, take: int) -> None:
    assert prefill_size(left, budget) == take


def test_chunks_cover_a_prompt_without_single_tokens() -> None:
    for left in range(2, 300):
        for budget in (3, 7, 64, 512):  # a step always has room for 3 (Settings: batch >= slots + 3)
            sizes, rest = [], left
            while rest:
                take = prefill_size(rest, budget)
                assert take != 1 and take <= budget
                sizes.append(take)
                rest -= take
            assert sum(sizes) == left
