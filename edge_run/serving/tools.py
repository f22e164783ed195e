"""Tool calling and structured outputs: prompts, grammars, and parsing calls out of model text.

Two modes:

- **native**: the model's chat template renders ``tools`` itself (Qwen, Llama 3.x, Hermes,
  Mistral...). Its own output formats are parsed (``<tool_call>{...}</tool_call>``,
  ``[TOOL_CALLS][...]``, ``<|python_tag|>{...}``, bare ``{"name":..., "parameters":...}``).
- **generic**: any other model. The tool list goes into the system prompt and a grammar makes the
  output either a plain answer or one JSON call ``{"name": ..., "arguments": {...}}``.

``tool_choice`` "required" or a named function is always enforced by grammar, in both modes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from edge_run.serving.request import json_object, new_id

__all__ = ["CallPlan", "ParsedCall", "ToolEvent", "ToolStream", "check_schema", "parse_calls", "plan_tools"]

# JSON-schema keywords the grammar converter honours; anything else is refused, never ignored.
SUPPORTED_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "prefixItems", "enum",
        "const", "anyOf", "oneOf", "allOf", "$ref", "$defs", "definitions", "minItems", "maxItems",
        "minLength", "maxLength", "pattern", "format", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "description", "title", "default", "examples", "$schema", "$id", "nullable",
        "strict",
    }
)  # fmt: skip


def check_schema(schema: Any, path: str) -> None:
    """Raise ``ValueError`` naming the first keyword the grammar could not enforce."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise ValueError(f"{path} must be a JSON schema object")
    for key, value in schema.items():
        if key not in SUPPORTED_KEYWORDS:
            raise ValueError(f"unsupported JSON schema keyword `{key}` at {path}")
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            for name, sub in value.items():
                check_schema(sub, f"{path}.{key}.{name}")
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            check_schema(value, f"{path}.{key}")
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
            for i, sub in enumerate(value):
                check_schema(sub, f"{path}.{key}[{i}]")


@dataclass(frozen=True)
class ParsedCall:
    id: str
    name: str
    arguments: str  # a JSON string, as OpenAI sends it


@dataclass(frozen=True)
class CallPlan:
    """How one request uses its tools: the extra prompt, the grammar schema, the parse mode."""

    system_prompt: str | None  # generic mode: tool list and instructions for the system message
    call_schema: dict[str, Any] | None  # the JSON schema a call must match (grammar), if enforced
    allow_text: bool  # whether a plain answer is allowed instead of a call
    native: bool


def _call_schema(functions: list[dict[str, Any]]) -> dict[str, Any]:
    variants = [
        {
            "type": "object",
            "properties": {
                "name": {"const": f["name"]},
                "arguments": f.get("parameters") or {"type": "object"},
            },
            "required": ["name", "arguments"],
        }
        for f in functions
    ]
    return variants[0] if len(variants) == 1 else {"anyOf": variants}


def _generic_prompt(functions: list[dict[str, Any]], forced: bool) -> str:
    listing = json.dumps(
        [{k: f[k] for k in ("name", "description", "parameters") if f.get(k) is not None} for f in functions]
    )
    how = 'reply with only a JSON object {"name": <function name>, "arguments": <arguments object>}'
    if forced:
        return f"You must call a function. Available functions:\n{listing}\nTo call it, {how}."
    return (
        f"You can call functions. Available functions:\n{listing}\n"
        f"To call one, {how}. If no function is needed, answer normally."
    )


def plan_tools(functions: list[dict[str, Any]], choice: str | None, *, native: bool) -> CallPlan | None:
    """``choice`` is "none", "auto", "required" or a function name; ``None`` means "auto"."""
    if not functions or choice == "none":
        return None
    if choice not in (None, "auto", "required"):
        functions = [f for f in functions if f["name"] == choice]
    forced = choice not in (None, "auto")
    prompt = None if native else _generic_prompt(functions, forced)
    if native and not forced:
        return CallPlan(system_prompt=None, call_schema=None, allow_text=True, native=True)
    schema = _call_schema(functions)
    return CallPlan(system_prompt=prompt, call_schema=schema, allow_text=not forced, native=native)


_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_MARKERS = ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "{")


def _as_call(obj: Any) -> ParsedCall | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):  # some models already send a JSON string
        try:
            args = json_object(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ParsedCall(id=new_id("call_"), name=obj["name"], arguments=json.dumps(args, ensure_ascii=False))


def _json_values(text: str) -> Iterator[Any]:
    decoder = json.JSONDecoder()
    i = 0
    while i < len(text):
        while i < len(text) and text[i] in " \t\r\n,;":
            i += 1
        if i >= len(text):
            return
        try:
            value, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return
        yield value


def parse_calls(text: str) -> tuple[str | None, list[ParsedCall]]:
    """Split model output into (content, tool calls), for every format listed in the module doc."""
    stripped = text.strip()
    calls: list[ParsedCall] = []
    if "<tool_call>" in stripped:
        head = stripped[: stripped.index("<tool_call>")].strip()
        for body in _HERMES.findall(stripped):
            calls += [c for v in _json_values(body) if (c := _as_call(v))]
        return (head or None), calls
    for marker in ("[TOOL_CALLS]", "<|python_tag|>"):
        if marker in stripped:
            head, _, body = stripped.partition(marker)
            for value in _json_values(body.strip()):
                for item in value if isinstance(value, list) else [value]:
                    if call := _as_call(item):
                        calls.append(call)
            return (head.strip() or None), calls
    if stripped.startswith(("{", "[")):
        for value in _json_values(stripped):
            for item in value if isinstance(value, list) else [value]:
                if call := _as_call(item):
                    calls.append(call)
        if calls:
            return None, calls
    return text, []


@dataclass
class ToolEvent:
    content: str | None = None
    call: ParsedCall | None = None  # a call's header (id, name) with its first arguments
    arguments: str | None = None  # a later fragment of the current call's arguments


_GENERIC_HEAD = re.compile(r'^\s*\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')
_TAIL = re.compile(r"\s*\}?\s*$")


class ToolStream:
    """Streams a tool-enabled answer: plain text passes through, calls become OpenAI deltas.

    A generic-mode call streams its ``arguments`` as they are generated; native formats are
    parsed once the answer is complete.
    """

    def __init__(self, native: bool) -> None:
        self._native = native
        self._buf = ""
        self._mode: str | None = None  # None (undecided), "text", "generic", "native"
        self._header_sent = False
        self._sent = 0  # characters of the arguments already sent (generic mode)
        self._id = new_id("call_")

    def push(self, text: str) -> list[ToolEvent]:
        self._buf += text
        if self._mode is None:
            lead = self._buf.lstrip()
            if not lead:
                return []
            if not self._native:
                self._mode = "generic" if lead.startswith("{") else "text"
            elif lead.startswith(_MARKERS):
                self._mode = "native"
            elif any(m.startswith(lead) for m in _MARKERS):
                return []  # may still become a marker
            else:
                self._mode = "text"
        if self._mode == "text":
            out, self._buf = self._buf, ""
            return [ToolEvent(content=out)]
        return self._generic() if self._mode == "generic" else []

    def _generic(self) -> list[ToolEvent]:
        head = _GENERIC_HEAD.match(self._buf)
        if head is None:
            return []
        body = self._buf[head.end() :]
        tail = _TAIL.search(body)
        end = tail.start() if tail else len(body)  # hold back what may be the call's closing brace
        events = []
        if not self._header_sent:
            self._header_sent = True
            name = json.loads(f'"{head.group(1)}"')
            events.append(ToolEvent(call=ParsedCall(id=self._id, name=name, arguments="")))
        if end > self._sent:
            events.append(ToolEvent(arguments=body[self._sent : end]))
            self._sent = end
        return events

    def finish(self) -> tuple[list[ToolEvent], bool]:
        """Flush what is held; returns the events and whether the answer was a tool call."""
        if self._mode == "generic" and _GENERIC_HEAD.match(self._buf):
            return self._generic(), True
        content, calls = parse_calls(self._buf) if self._buf else (None, [])
        events = [ToolEvent(content=content)] if content else []
        events += [ToolEvent(call=c) for c in calls]
        return events, bool(calls)
