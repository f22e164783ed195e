"""Qwen3-Coder's XML calls (also Qwen3.5 and Nemotron 3), turned into a JSON arguments object.

    <function=NAME>
    <parameter=P>
    VALUE
    </parameter>
    </function>

The values are bare text, so each is typed the way llama.cpp types it: by the function's schema
when it is known (a string parameter stays text), otherwise as JSON where it parses and text where
not. The object goes out one parameter at a time, each once its ``</parameter>`` is read.
"""

from __future__ import annotations

import json
from typing import Any

from edge_run.serving.calls.reader import Cursor, Cut, NoMatch, Step, literal, name_until, one_of, skip, until

__all__ = ["typed", "xml_function"]

_PYTHON = {
    "object": (dict,),
    "array": (list,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
    "null": (type(None),),
}


def _types(schema: Any) -> set[str]:
    """The JSON types a parameter's schema allows; empty when it does not say."""
    if not isinstance(schema, dict):
        return set()
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    out: set[str] = set()
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key) or ():
            out |= _types(sub)
    return out


def _is(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind in ("number", "integer"):
        return False
    return isinstance(value, _PYTHON.get(kind, ()))


def typed(text: str, schema: Any) -> Any:
    """A parameter's text as the value its schema asks for."""
    kinds = _types(schema)
    if kinds == {"string"}:
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if "string" not in kinds or any(_is(value, k) for k in kinds - {"string"}):
        return value
    return text


def _strip_newline(text: str) -> str:
    """The value between ``>\\n`` and ``\\n</parameter>``: one newline each side is layout."""
    if text.startswith("\n"):
        text = text[1:]
    return text[:-1] if text.endswith("\n") else text


def xml_function(cur: Cursor, opened: bool = False) -> Step[None]:
    """One ``<function=NAME>...</function>``; ``opened`` when ``<function=`` was already read."""
    if not opened:
        yield from literal(cur, "<function=")
    name, _ = yield from name_until(cur, (">",))
    cur.open_call(name)
    schema = cur.schemas.get(name)
    properties = schema.get("properties") if isinstance(schema, dict) else None
    count = 0
    try:
        while True:
            yield from skip(cur)
            if (yield from one_of(cur, ("<parameter=", "</function>"))) == "</function>":
                break
            key, _ = yield from until(cur, (">",), limit=256)
            value, _ = yield from until(cur, ("</parameter>",))
            prop = properties.get(key) if isinstance(properties, dict) else None
            item = json.dumps(typed(_strip_newline(value), prop), ensure_ascii=False)
            cur.arguments(("{" if count == 0 else ", ") + json.dumps(key.strip(), ensure_ascii=False) + ": " + item)
            count += 1
    except (Cut, NoMatch):
        cur.arguments("}" if count else "{}")  # what was read stays a valid object; a cut value is dropped
        raise
    cur.arguments("}" if count else "{}")
