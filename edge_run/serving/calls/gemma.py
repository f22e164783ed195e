"""Gemma 4's calls: ``<|tool_call>call:NAME{key:value,...}<tool_call|>``, turned into JSON.

Gemma writes its arguments in its own notation (its template's ``format_argument``): keys bare,
strings between ``<|"|>`` quotes, numbers, ``true``/``false``/``null``, ``{...}`` and ``[...]`` as in
JSON. It is converted piece by piece, as llama.cpp's ``gemma4_to_json`` does, and streamed as JSON.
"""

from __future__ import annotations

import json
import re

from edge_run.serving.calls.reader import Cursor, Cut, Step, literal, name_until, one_of, peek, skip, until

__all__ = ["gemma_call"]

QUOTE = '<|"|>'
_SCALAR_END = re.compile(r"[,}\]]")


def _string(cur: Cursor) -> Step[str]:
    yield from literal(cur, QUOTE)
    text, _ = yield from until(cur, (QUOTE,))
    return text


def _scalar(cur: Cursor) -> Step[str]:
    """A number, ``true``, ``false`` or ``null`` as JSON (any other bare word as a JSON string)."""
    start = cur.pos
    while (end := _SCALAR_END.search(cur.buf, start)) is None:
        if cur.final:
            raise Cut
        yield
    cur.pos = end.start()
    text = cur.buf[start : end.start()].strip()
    try:
        json.loads(text)
    except ValueError:
        return json.dumps(text, ensure_ascii=False)
    return text


def _value(cur: Cursor) -> Step[None]:
    yield from skip(cur)
    first = yield from peek(cur)
    if first == "{":
        cur.pos += 1
        yield from _members(cur, "}", keyed=True)
    elif first == "[":
        cur.pos += 1
        yield from _members(cur, "]", keyed=False)
    elif first == "<":
        cur.arguments(json.dumps((yield from _string(cur)), ensure_ascii=False))
    else:
        cur.arguments((yield from _scalar(cur)))


def _key(cur: Cursor) -> Step[str]:
    if (yield from peek(cur)) == "<":  # a quoted key
        key = yield from _string(cur)
        yield from skip(cur)
        yield from literal(cur, ":")
        return key
    key, _ = yield from until(cur, (":",), limit=256)
    return key.strip()


def _members(cur: Cursor, close: str, keyed: bool) -> Step[None]:
    """The members of a dict (``keyed``) or list, its opening bracket already read."""
    cur.arguments("{" if keyed else "[")
    yield from skip(cur)
    if (yield from literal(cur, close, optional=True)):
        cur.arguments(close)
        return
    while True:
        if keyed:
            cur.arguments(json.dumps((yield from _key(cur)), ensure_ascii=False) + ":")
        yield from _value(cur)
        yield from skip(cur)
        separator = yield from one_of(cur, (",", close))
        cur.arguments(separator)
        if separator == close:
            return
        yield from skip(cur)


def gemma_call(cur: Cursor, trigger: str) -> Step[None]:
    """What follows ``<|tool_call>``: ``call:NAME{...}<tool_call|>``."""
    yield from literal(cur, "call:")
    name, _ = yield from name_until(cur, ("{",))
    cur.open_call(name)
    yield from _members(cur, "}", keyed=True)
    yield from literal(cur, "<tool_call|>", optional=True)
