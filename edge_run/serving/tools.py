"""Tool calling and structured outputs: prompts, grammars, and parsing calls out of model text.

Two modes:

- **native**: the model's chat template renders ``tools`` itself (Qwen, Llama 3.x, Hermes,
  Mistral...). Its own output format, told from the template (:mod:`.calls`), is parsed.
- **generic**: any other model. The tool list goes into the system prompt and a grammar makes the
  output either a plain answer or one JSON call ``{"name": ..., "arguments": {...}}``.

``tool_choice`` "required" or a named function is always enforced by grammar, in both modes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["CallPlan", "call_schema", "check_schema", "plan_tools"]

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
class CallPlan:
    """How one request uses its tools: the extra prompt, the grammar schema, the parse mode."""

    system_prompt: str | None  # generic mode: tool list and instructions for the system message
    call_schema: dict[str, Any] | None  # the JSON schema a call must match (grammar), if enforced
    allow_text: bool  # whether a plain answer is allowed instead of a call
    native: bool


def call_schema(functions: list[dict[str, Any]]) -> dict[str, Any]:
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
    schema = call_schema(functions)
    return CallPlan(system_prompt=prompt, call_schema=schema, allow_text=not forced, native=native)
