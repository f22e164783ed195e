"""Stored responses (``store: true``), so a conversation can go on by ``previous_response_id``.

In memory, one store per app: at most ``limit`` responses, each kept ``ttl`` seconds after it was
written; the oldest go first. A restart forgets them all. A response belongs to the key that made it:
any other key gets the same 404 as for an id that never existed.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_run.errors import EdgeRunError

if TYPE_CHECKING:
    from edge_run.api.responses.schemas import ResponseObject
    from edge_run.serving.request import Turn

__all__ = ["ResponseNotFound", "ResponseStore", "Stored"]


class ResponseNotFound(EdgeRunError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"

    def __init__(self, response_id: str, param: str | None = None) -> None:
        super().__init__(
            f"Response with id '{response_id}' not found (never stored, deleted, or expired).", param=param
        )


@dataclass(frozen=True, slots=True)
class Stored:
    response: ResponseObject
    turns: list[Turn]  # the whole conversation up to and including this response, without its instructions
    owner: str | None  # the key's hash; None when auth is off
    written: float


class ResponseStore:
    """Responses by id, bounded by count and age."""

    def __init__(self, limit: int = 1000, ttl: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.ttl = ttl
        self._clock = clock
        self._items: OrderedDict[str, Stored] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        self._expire()
        return len(self._items)

    def put(self, response: ResponseObject, turns: list[Turn], owner: str | None) -> None:
        self._items.pop(response.id, None)
        self._items[response.id] = Stored(response, turns, owner, self._clock())
        while len(self._items) > self.limit:
            self._items.popitem(last=False)

    def get(self, response_id: str, owner: str | None, param: str | None = None) -> Stored:
        self._expire()
        stored = self._items.get(response_id)
        if stored is None or stored.owner != owner:
            raise ResponseNotFound(response_id, param)
        return stored

    def delete(self, response_id: str, owner: str | None) -> None:
        self.get(response_id, owner)
        del self._items[response_id]

    def _expire(self) -> None:
        cutoff = self._clock() - self.ttl
        while self._items:
            oldest = next(iter(self._items.values()))
            if oldest.written > cutoff:
                return
            self._items.popitem(last=False)
