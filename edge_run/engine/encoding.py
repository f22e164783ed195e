"""Images and audio encoded beside the engine thread, so that other slots keep generating while a large one encodes.

mtmd encodes a media chunk in one call, which no step can cut: a Gemma 3 4B image is one chunk, its whole SigLIP
tower, about 48 s on 2 cores. On the engine thread that call stalls every other stream for as long. So when
another slot is generating, the chunk is encoded on a thread of its own, as a member of the :class:`CoreShare`
(on 2 cores: one core for the encode, one for the engine's steps), and its slot waits while the others go on.
With no one generating, the engine thread encodes it itself, on all its threads: the fastest first token.

mtmd's embeddings do not depend on the thread count (``tests/integration/test_media.py`` compares them), so where
a chunk was encoded changes no answer.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge_run.engine.media import MediaSpan
    from edge_run.engine.threads import CoreShare

__all__ = ["Encoder"]

POLL = 0.05  # seconds the engine thread waits for an encode beside it before it looks for new requests


class Encoder:
    """One model's media encodes: on the engine thread, or one at a time beside it."""

    def __init__(self, cores: CoreShare, member: int, *, beside: bool) -> None:
        self.cores = cores
        self._engine = member  # the engine thread's handle in ``cores``
        self.can_beside = beside  # False: every encode on the engine thread (a projector on a GPU)
        self._member = cores.join() if beside else 0
        self._pool: ThreadPoolExecutor | None = None
        self._under_way: Future[None] | None = None
        self.encoded_beside = 0  # chunks encoded beside the engine thread (``/health``: ``media_encoded_beside``)

    def ready(self, span: MediaSpan, threads: int, beside: bool) -> bool:
        """Whether ``span``'s slot may go on with it. If it is not encoded, encodes it: beside the engine thread
        when ``beside`` and the projector can (its slot waits), else here, on up to ``threads`` threads, and when
        ``beside`` still, its slot waits a step (the others wait for one chunk, not a whole file). While an encode
        is under way beside, every other span waits for it (the projector encodes one chunk at a time)."""
        if self._under_way is not None:
            if not self._under_way.done():
                return False
            self._under_way = None
        if span.error is not None:
            raise span.error
        if span.encoded:
            return True
        if beside and self.can_beside:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="edge-run-encode")
            self._under_way = self._pool.submit(self._encode_beside, span, threads)
            return False
        got = self.cores.acquire(self._engine, threads)
        try:
            span.embeddings(got)
        finally:
            self.cores.release(self._engine)
        return not beside

    @property
    def under_way(self) -> bool:
        return self._under_way is not None and not self._under_way.done()

    def wait(self, seconds: float = POLL) -> None:
        """Wait up to ``seconds`` for the encode under way (the engine thread, with nothing else to do)."""
        if self._under_way is not None:
            wait_for([self._under_way], timeout=seconds)

    def _encode_beside(self, span: MediaSpan, threads: int) -> None:
        self.cores.set_active(self._member, True)
        got = self.cores.acquire(self._member, threads)  # its share: the engine's steps take the rest
        try:
            span.embeddings(got)
            self.encoded_beside += 1
        except Exception as exc:  # raised to the slot that waits for it, on the engine thread
            span.error = exc
        finally:
            self.cores.release(self._member)
            self.cores.set_active(self._member, False)

    def close(self) -> None:
        """Wait for an encode under way, once the engine thread has ended."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
