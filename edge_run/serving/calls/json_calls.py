"""The call formats whose arguments are a JSON object, read after the family's trigger.

Each body gets the cursor just past its trigger (a bare ``{`` trigger is left unread) and streams
the arguments' raw JSON text as it comes. Layouts follow llama.cpp's ``common/chat.cpp`` and its
``tests/test-chat.cpp``.
"""

from __future__ import annotations

import json
from typing import Any

from edge_run.serving.calls.reader import (
    Cursor,
    NoMatch,
    Step,
    decode,
    json_value,
    literal,
    name_until,
    one_of,
    peek,
    skip,
)
from edge_run.serving.calls.xml import xml_function

__all__ = ["CALLS_BEGIN", "deepseek_r1", "deepseek_v3", "json_calls", "mistral", "tagged"]


def _deepseek_token(words: str) -> str:
    """DeepSeek's special tokens: the words between fullwidth bars, joined by lower one-eighth blocks."""
    return "<\uff5c" + words.replace(" ", "\u2581") + "\uff5c>"


CALLS_BEGIN = _deepseek_token("tool calls begin")
CALLS_END = _deepseek_token("tool calls end")
CALL_BEGIN = _deepseek_token("tool call begin")
CALL_END = _deepseek_token("tool call end")
SEP = _deepseek_token("tool sep")


def _as_call(value: Any) -> tuple[str, str] | None:
    """(name, arguments JSON) of a whole ``{"name":..., "arguments"|"parameters":...}`` object."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):  # some models send the arguments as a JSON string
        args = decode(args)
    if not isinstance(args, dict):
        return None
    return value["name"], json.dumps(args, ensure_ascii=False)


def _head(cur: Cursor) -> Step[str | None]:
    """Read ``{"name": "...", "arguments":`` and return the name; ``None`` for another key order."""
    yield from literal(cur, "{")
    yield from skip(cur)
    if not (yield from literal(cur, '"name"', optional=True)):
        if (yield from peek(cur)) != '"':
            raise NoMatch  # not JSON: `{` in prose
        return None
    yield from skip(cur)
    yield from literal(cur, ":")
    yield from skip(cur)
    name = decode((yield from json_value(cur)))
    if not isinstance(name, str):
        raise NoMatch
    yield from skip(cur)
    if not (yield from literal(cur, ",", optional=True)):
        return None
    yield from skip(cur)
    if not (yield from one_of(cur, ('"arguments"', '"parameters"'), optional=True)):
        return None
    yield from skip(cur)
    yield from literal(cur, ":")
    return name


def json_call(cur: Cursor) -> Step[None]:
    """One call object; its arguments stream when ``name`` comes first, else it is read whole."""
    start = cur.pos
    name = yield from _head(cur)
    if name is None:
        cur.pos = start
        call = _as_call(decode((yield from json_value(cur))))
        if call is None:
            raise NoMatch
        cur.open_call(call[0])
        cur.arguments(call[1])
        return
    cur.open_call(name)
    yield from skip(cur)
    if (yield from peek(cur)) == '"':  # arguments as a JSON string: sent decoded, once whole
        text = decode((yield from json_value(cur)))
        cur.arguments(text if isinstance(text, str) else "")
    else:
        yield from json_value(cur, stream=True)
    yield from skip(cur)
    if not (yield from literal(cur, "}", optional=True)):
        yield from json_value(cur, depth=1)  # more keys after the arguments: read to the object's end


def _json_array(cur: Cursor) -> Step[None]:
    """``[{call}, {call}]``, as Mistral v3 and Granite send parallel calls."""
    yield from literal(cur, "[")
    while True:
        yield from skip(cur)
        if (yield from literal(cur, "]", optional=True)):
            return
        yield from json_call(cur)
        yield from skip(cur)
        if (yield from one_of(cur, (",", "]"))) == "]":
            return


def json_calls(cur: Cursor, trigger: str) -> Step[None]:
    """A call object, several separated by ``;`` or ``,``, or an array of them (Llama 3, Granite, generic)."""
    yield from skip(cur)
    if (yield from peek(cur)) == "[":
        yield from _json_array(cur)
        return
    yield from json_call(cur)
    while True:
        yield from skip(cur, " \t\r\n;,")
        if (yield from peek(cur)) != "{":
            return
        yield from json_call(cur)


def tagged(cur: Cursor, trigger: str) -> Step[None]:
    """``<tool_call>`` with JSON calls (Hermes, Qwen) or a Qwen3-Coder ``<function=...>`` inside."""
    if trigger == "<function=":  # Qwen3-Coder may leave out its first <tool_call>
        yield from xml_function(cur, opened=True)
    else:
        yield from skip(cur)
        if (yield from peek(cur)) == "<":
            yield from xml_function(cur)
        else:
            yield from json_calls(cur, trigger)
    yield from skip(cur)
    yield from literal(cur, "</tool_call>", optional=True)


def mistral(cur: Cursor, trigger: str) -> Step[None]:
    """``[TOOL_CALLS]`` then v3's JSON array, or v11's ``NAME[ARGS]{...}`` (``[CALL_ID]id`` between)."""
    yield from skip(cur)
    if (yield from peek(cur)) in ("[", "{"):
        yield from json_calls(cur, trigger)
        return
    name, mark = yield from name_until(cur, ("[ARGS]", "[CALL_ID]"))
    if mark == "[CALL_ID]":
        yield from name_until(cur, ("[ARGS]",))  # the model's own call id; ours is used instead
    cur.open_call(name)
    yield from skip(cur)
    yield from json_value(cur, stream=True)


def _deepseek(cur: Cursor, r1: bool) -> Step[None]:
    """The calls of a "tool calls begin" section, each between "tool call begin" and "tool call end"."""
    while True:
        yield from skip(cur)
        if not (yield from literal(cur, CALL_BEGIN, optional=True)):
            break
        if r1:  # function SEP NAME \n ```json \n {...} \n ```
            yield from name_until(cur, (SEP,))
            name, _ = yield from name_until(cur, ("\n",))
            yield from skip(cur)
            yield from one_of(cur, ("```json", "```"), optional=True)
        else:  # NAME SEP {...}
            name, _ = yield from name_until(cur, (SEP,))
        cur.open_call(name)
        yield from skip(cur)
        yield from json_value(cur, stream=True)
        yield from skip(cur)
        if r1:
            yield from literal(cur, "```", optional=True)
            yield from skip(cur)
        yield from literal(cur, CALL_END, optional=True)
    yield from literal(cur, CALLS_END, optional=True)


def deepseek_r1(cur: Cursor, trigger: str) -> Step[None]:
    """DeepSeek R1 (and its distills): a type, the name, then the arguments in a ```json fence."""
    yield from _deepseek(cur, r1=True)


def deepseek_v3(cur: Cursor, trigger: str) -> Step[None]:
    """DeepSeek V3.1: the name, the separator token, then the bare arguments object."""
    yield from _deepseek(cur, r1=False)
