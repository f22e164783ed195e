"""Reading a tool-enabled answer as it streams: content passes through, calls become events.

Text is content until one of the family's triggers; only a tail that could still become a trigger
is held back. After a trigger the family's format reads the call, sending its header once the name
is known and its arguments as they arrive. What turns out not to be a call goes out as content, so
no text is ever lost; a call the answer cut off is still reported, with what arguments arrived.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from edge_run.serving.calls.events import ParsedCall, ToolEvent
from edge_run.serving.calls.families import BARE, triggers
from edge_run.serving.calls.gemma import gemma_call
from edge_run.serving.calls.json_calls import deepseek_r1, deepseek_v3, json_calls, mistral, tagged
from edge_run.serving.calls.reader import Cursor, Cut, NoMatch, Step

__all__ = ["ToolStream", "held_back", "parse_calls"]

Body = Callable[[Cursor, str], Step[None]]

_BODIES: dict[str, Body] = {
    "hermes": tagged,
    "qwen3_coder": tagged,
    "llama3": json_calls,
    "mistral": mistral,
    "deepseek_r1": deepseek_r1,
    "deepseek_v3": deepseek_v3,
    "granite": json_calls,
    "gemma": gemma_call,
    "generic": json_calls,
}


def held_back(text: str, marks: tuple[str, ...]) -> int:
    """How many characters at the end of ``text`` could be the beginning of one of ``marks``."""
    longest = max((len(m) for m in marks), default=1) - 1
    for k in range(min(len(text), longest), 0, -1):
        if any(m.startswith(text[-k:]) for m in marks):
            return k
    return 0


def _text(cur: Cursor, marks: tuple[str, ...], bare: bool, fresh: bool) -> Step[str | None]:
    """Send content up to the next trigger and return that trigger, unread; ``None`` at the end.

    While ``fresh`` (nothing but whitespace since the start or the last call), whitespace is held:
    it is dropped if a call follows, and only a ``bare`` family's call may open with ``{`` there.
    """
    while True:
        cur.trim()
        buf = cur.buf
        lead = len(buf) - len(buf.lstrip())
        if fresh and lead == len(buf) and not cur.final:
            yield
            continue
        if fresh and bare and buf[lead : lead + 1] == "{":
            cur.pos = lead
            return "{"
        hits = [(i, m) for m in marks if (i := buf.find(m)) >= 0]
        if hits:
            i, mark = min(hits)
            if not fresh or buf[:i].strip():
                cur.content(buf[:i])
            cur.pos = i
            return mark
        if cur.final:
            if not (fresh and cur.calls and not buf.strip()):
                cur.content(buf)
            cur.pos = len(buf)
            return None
        end = len(buf) - held_back(buf, marks)
        if not fresh or buf[:end].strip():
            cur.content(buf[:end])
            cur.pos, fresh = end, False
        yield


def _answer(cur: Cursor, family: str) -> Step[None]:
    """The whole answer: content and calls, in turn, until it ends."""
    marks = tuple(t for t in triggers(family) if t != "{")
    bare, body = family in BARE, _BODIES[family]
    fresh = True
    while True:
        mark = yield from _text(cur, marks, bare, fresh)
        if mark is None:
            return
        start, calls = cur.pos, cur.calls
        if mark != "{":
            cur.pos += len(mark)
        try:
            yield from body(cur, mark)
            if cur.calls == calls:
                raise NoMatch
        except NoMatch:
            if cur.calls == calls:  # not a call after all: the trigger is content, reading goes on after it
                cur.pos = start + len(mark)
                cur.content(mark)
                fresh = False
                continue
        except Cut:
            if cur.calls == calls:
                cur.content(cur.buf[start:])
            return
        fresh = True


class ToolStream:
    """Streams a tool-enabled answer in ``family``'s call format (see :func:`.family_of`).

    ``schemas`` (function name -> parameters schema) types the values of formats that write them
    as bare text (Qwen3-Coder's XML).
    """

    def __init__(self, family: str, schemas: Mapping[str, Any] | None = None) -> None:
        if family not in _BODIES:
            raise ValueError(f"no tool-call parser for family `{family}`")
        self._cur = Cursor(schemas)
        self._reader = _answer(self._cur, family)
        self._done = False

    def push(self, text: str) -> list[ToolEvent]:
        self._cur.buf += text
        self._resume()
        return self._take()

    def finish(self) -> tuple[list[ToolEvent], bool]:
        """Flush what is held; returns the events and whether the answer made any call."""
        self._cur.final = True
        self._resume()
        if not self._done:
            raise RuntimeError("the call reader waited for text after the answer ended")
        return self._take(), self._cur.calls > 0

    def _resume(self) -> None:
        if not self._done:
            try:
                next(self._reader)
            except StopIteration:
                self._done = True

    def _take(self) -> list[ToolEvent]:
        events, self._cur.events = self._cur.events, []
        return events


def parse_calls(
    text: str, family: str, schemas: Mapping[str, Any] | None = None
) -> tuple[str | None, list[ParsedCall]]:
    """Split a whole answer into (content, calls), exactly as :class:`ToolStream` streams it."""
    stream = ToolStream(family, schemas)
    events = stream.push(text) + stream.finish()[0]
    content = "".join(e.content or "" for e in events)
    calls: list[ParsedCall] = []
    fragments: list[list[str]] = []
    for e in events:
        if e.call is not None:
            calls.append(e.call)
            fragments.append([e.call.arguments])
        if e.arguments:
            fragments[-1].append(e.arguments)
    calls = [replace(c, arguments="".join(f)) for c, f in zip(calls, fragments, strict=True)]
    return content or None, calls
