"""Token bytes to safe text: incremental UTF-8 decoding and stop-string detection."""

from __future__ import annotations

import codecs
from collections.abc import Sequence

__all__ = ["TextStream"]


class TextStream:
    """Turns token bytes into text that is safe to send.

    A multi-byte character split across tokens is held until it is whole, and text that could be
    the start of a stop string is held until it is known not to be one. Only the tail that could
    still match is ever kept, so the scan window stays as short as the longest stop string.
    """

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._stops = tuple(s for s in stops if s)
        self._held = ""
        self.stop: str | None = None  # the stop string that ended the text, once one has

    @property
    def stopped(self) -> bool:
        return self.stop is not None

    def push(self, data: bytes) -> str:
        """Add a token's bytes; return the text now safe to emit. Sets :attr:`stop` on a stop string."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(data)
        if not self._stops:
            out, self._held = self._held, ""
            return out
        found = [(i, k) for k, i in enumerate(self._held.find(s) for s in self._stops) if i >= 0]
        if found:
            cut, k = min(found)  # the earliest match; at a tie, the stop string listed first
            out, self._held = self._held[:cut], ""
            self.stop = self._stops[k]
            return out
        keep = self._partial_stop_len()
        out = self._held[: len(self._held) - keep]
        self._held = self._held[len(self._held) - keep :]
        return out

    def flush(self) -> str:
        """Everything still held, at the end of generation (a partial stop string is just text)."""
        if self.stopped:
            return ""
        out = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return out

    def _partial_stop_len(self) -> int:
        held = self._held
        best = 0
        for stop in self._stops:
            for k in range(min(len(stop) - 1, len(held)), best, -1):
                if held.endswith(stop[:k]):
                    best = k
                    break
        return best
