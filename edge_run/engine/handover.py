"""How the engine thread's results reach the event loop: gathered, one hop for several steps."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_run.engine.slots import Job
    from edge_run.engine.types import Chunk

__all__ = ["HANDOVER_INTERVAL", "Handover"]

# While streams run, steps' results are handed to the event loop at most this often (seconds). Every
# hand-over wakes the event loop and writes to each client's socket; on a small CPU that work stalls
# llama.cpp's compute threads, so a fast model at one stream on 2 cores decodes ~5% faster when
# 5-7 steps share a hand-over. A first token, a finished choice, and any step slower than this go at once.
HANDOVER_INTERVAL = 0.05


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
