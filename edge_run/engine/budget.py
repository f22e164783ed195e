"""A thinking budget: once a thought has taken its tokens, the tokens that close it replace what is sampled.

llama.cpp's ``--reasoning-budget`` does the same. The thought is the answer's lead: it is open from the start
when the prompt opened it, or once the answer begins with the opening tag; it ends at the closing tag.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from edge_run.engine.types import ThoughtLimit

__all__ = ["Budget"]


@dataclass
class Budget:
    """One choice's budget, as its tokens are sampled (the engine thread's)."""

    limit: ThoughtLimit
    closing: list[int]  # the tokens that end a thought cut short
    piece: Callable[[int], bytes]
    _lead: str = ""  # the answer so far, while it may still open a thought
    _tail: str = ""  # the thought's last characters, to see its closing tag
    _open: bool = False
    _spent: int = 0
    _forced: list[int] = field(default_factory=list)
    _done: bool = False

    def __post_init__(self) -> None:
        self._open = self.limit.opened

    def pick(self, token: int) -> int:
        """The token to emit in place of ``token``, the sampled one."""
        if self._forced:
            return self._forced.pop(0)
        if self._done:
            return token
        if self._open and self._spent >= self.limit.tokens:
            self._done, self._forced = True, self.closing[1:]
            return self.closing[0]
        text = self.piece(token).decode("utf-8", "ignore")
        if not self._open:
            self._lead += text
            lead = self._lead.lstrip()
            if lead.startswith(self.limit.open):
                self._open, self._tail = True, lead[len(self.limit.open) :]
                return token
            self._done = bool(lead) and not self.limit.open.startswith(lead)  # an answer without a thought
            return token
        self._spent += 1
        self._tail = (self._tail + text)[-2 * len(self.limit.close) :]
        self._done = self.limit.close in self._tail
        return token
