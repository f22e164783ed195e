"""A message's parts become one prompt text as llama-server joins them (common/chat.cpp): a newline between text
parts, none beside a media marker; and the media rows' runs and positions the scheduler decodes them by."""

from __future__ import annotations

import numpy as np

from edge_run.engine.media import MEDIA_MARKER, MediaSpan, media_ids, position, rows_at, runs
from edge_run.serving.request import join_parts

M = MEDIA_MARKER


def test_parts_join_with_newlines_but_not_beside_media() -> None:
    assert join_parts(["Describe it.", M]) == "Describe it." + M
    assert join_parts([M, "And this?"]) == M + "And this?"
    assert join_parts(["a", "b", M, "c", M, M, "d"]) == "a\nb" + M + "c" + M + M + "d"
    assert join_parts(["", "x"]) == "x"


def test_each_chunk_is_a_run_and_later_rows_sit_after_the_positions_a_grid_image_takes() -> None:
    tokens = [7, 8, *media_ids(5, 6), *media_ids(9, 4), 3]
    assert runs(tokens) == [(0, 2, False), (2, 8, True), (8, 12, True), (12, 13, False)]

    def grid(pos0: int) -> np.ndarray:  # 6 rows on a 3x2 grid, as M-RoPE lays an image out
        return np.array([[pos0] * 6, [pos0 + i // 3 for i in range(6)], [pos0 + i % 3 for i in range(6)], [0] * 6])

    spans = [
        MediaSpan(2, 6, "image", lambda threads: np.ones((6, 4), np.float32), whole=True, n_pos=3, layout=grid),
        MediaSpan(8, 4, "image", lambda threads: np.zeros((4, 4), np.float32)),
    ]
    assert [position(spans, i) for i in (0, 2, 8, 12)] == [0, 2, 5, 9]  # the grid takes 3 positions for 6 rows
    rows, at = rows_at(spans, 2, 6)
    assert rows.shape == (6, 4) and at is not None and at[:, 4].tolist() == [2, 3, 3, 0]
    rows, at = rows_at(spans, 9, 2)  # a causal chunk may be cut: rows 1 and 2 of it, on consecutive positions
    assert rows.shape == (2, 4) and at is None
