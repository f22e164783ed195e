"""The incremental reader every call format is written with.

A format is a generator that reads a shared :class:`Cursor` and yields whenever it needs more text:
the same code then parses a whole answer or one streamed a character at a time, and a call's header
and argument fragments go out the moment they are read. The helpers here are the only places that
wait; each raises :class:`Cut` when the answer ended first and :class:`NoMatch` when the text is not
what the format expects.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Iterable, Mapping
from typing import Any, TypeVar

from edge_run.serving.calls.events import ParsedCall, ToolEvent
from edge_run.serving.request import new_id

__all__ = [
    "Cursor",
    "Cut",
    "NoMatch",
    "Step",
    "decode",
    "json_value",
    "literal",
    "name_until",
    "one_of",
    "peek",
    "skip",
    "until",
]

T = TypeVar("T")
Step = Generator[None, None, T]  # a reading step: yields while it waits for text, returns its result

_NAME = re.compile(r"[\w.\-]*")  # the characters a function name may have


class NoMatch(Exception):
    """The text is not the format's next piece: before a call's header it goes back out as content."""


class Cut(Exception):
    """The answer ended in the middle of a piece."""


class Cursor:
    """The text read so far, where the reader stands in it, and the events it has produced."""

    def __init__(self, schemas: Mapping[str, Any] | None = None) -> None:
        self.buf = ""
        self.pos = 0
        self.final = False  # no more text will come
        self.calls = 0  # calls opened so far
        self.events: list[ToolEvent] = []
        self.schemas: Mapping[str, Any] = schemas or {}  # function name -> parameters schema

    def trim(self) -> None:
        """Forget what was read (only between calls: no reader holds an older position then)."""
        self.buf, self.pos = self.buf[self.pos :], 0

    def content(self, text: str) -> None:
        if not text:
            return
        last = self.events[-1] if self.events else None
        if last is not None and last.call is None and last.arguments is None and last.content is not None:
            self.events[-1] = ToolEvent(content=last.content + text)
        else:
            self.events.append(ToolEvent(content=text))

    def open_call(self, name: str) -> None:
        self.calls += 1
        self.events.append(ToolEvent(call=ParsedCall(id=new_id("call_"), name=name, arguments="")))

    def arguments(self, fragment: str) -> None:
        if fragment:
            self.events.append(ToolEvent(arguments=fragment))


def one_of(cur: Cursor, options: Iterable[str], optional: bool = False) -> Step[str]:
    """Read the longest of ``options`` that comes next; ``""`` if none does and ``optional``."""
    ordered = sorted(options, key=len, reverse=True)
    while True:
        have = cur.buf[cur.pos :]
        if not cur.final and any(len(have) < len(o) and o.startswith(have) for o in ordered):
            yield
            continue
        for option in ordered:
            if have.startswith(option):
                cur.pos += len(option)
                return option
        if optional:
            return ""
        raise Cut if cur.final and any(o.startswith(have) for o in ordered) else NoMatch


def literal(cur: Cursor, text: str, optional: bool = False) -> Step[bool]:
    """Read ``text``; whether it was there (a missing one raises unless ``optional``)."""
    return (yield from one_of(cur, (text,), optional)) != ""


def skip(cur: Cursor, chars: str = " \t\r\n") -> Step[None]:
    """Read past any of ``chars``; returns once another character (or the end) is in sight."""
    while True:
        while cur.pos < len(cur.buf) and cur.buf[cur.pos] in chars:
            cur.pos += 1
        if cur.pos < len(cur.buf) or cur.final:
            return
        yield


def peek(cur: Cursor) -> Step[str]:
    """The next character, not read; ``""`` at the end of the answer."""
    while cur.pos >= len(cur.buf):
        if cur.final:
            return ""
        yield
    return cur.buf[cur.pos]


def until(cur: Cursor, ends: tuple[str, ...], limit: int = 0) -> Step[tuple[str, str]]:
    """Read up to the first of ``ends``: (the text before it, which end); ``limit`` caps the text."""
    start = cur.pos
    while True:
        found = [(i, end) for end in ends if (i := cur.buf.find(end, start)) >= 0]
        if found:
            i, end = min(found)
            cur.pos = i + len(end)
            return cur.buf[start:i], end
        if limit and len(cur.buf) - start > limit:
            raise NoMatch
        if cur.final:
            raise Cut
        yield


def name_until(cur: Cursor, ends: tuple[str, ...]) -> Step[tuple[str, str]]:
    """Read a function name and the first of ``ends`` after it; anything else there is no match."""
    start = cur.pos
    while True:
        text = cur.buf[start:]
        name = m.group() if (m := _NAME.match(text)) else ""
        after = text[len(name) :]
        for end in ends:
            if after.startswith(end):
                if not name:
                    raise NoMatch
                cur.pos = start + len(name) + len(end)
                return name, end
        if after and not any(end.startswith(after) for end in ends):
            raise NoMatch
        if cur.final:
            raise Cut
        yield


def json_value(cur: Cursor, stream: bool = False, depth: int = 0) -> Step[str]:
    """Read one JSON object, array or string (the rest of one, from ``depth`` levels inside).

    Only its extent is tracked, not its validity: a streamed value (``stream``) goes out as
    argument fragments the moment it is read. Returns the raw text read.
    """
    first = yield from peek(cur)
    if depth == 0 and first not in ("{", "[", '"'):
        raise Cut if first == "" else NoMatch
    start = sent = i = cur.pos
    in_string = escaped = False
    while True:
        buf = cur.buf
        while i < len(buf):
            c = buf[i]
            i += 1
            if in_string:
                if escaped:
                    escaped = False
                elif c == "\\":
                    escaped = True
                elif c == '"':
                    in_string = False
                    if depth == 0:
                        break
            elif c == '"':
                in_string = True
            elif c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    break
        if stream:
            cur.arguments(buf[sent:i])
        sent = cur.pos = i
        if depth == 0 and not in_string:
            return buf[start:i]
        if cur.final:
            raise Cut
        yield


def decode(raw: str) -> Any:
    """``raw`` as JSON, or ``None`` where it is not."""
    try:
        return json.loads(raw)
    except ValueError:
        return None
