"""Request parts that several test modules send (no tests here), and the JSON-schema check for the answers."""

from __future__ import annotations

from typing import Any

__all__ = ["ASK", "NO_EOS", "WEATHER", "validate"]

# Chat Completions' tool shape; the Responses and Messages tests reshape it to theirs.
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}
ASK = [{"role": "user", "content": "What's the weather like in Paris right now?"}]

# Token ids 0, 2 and 4 are SmolLM2's end-of-generation tokens: banning them keeps a stream going.
NO_EOS = {"0": -100, "2": -100, "4": -100}


def validate(value: Any, schema: dict[str, Any]) -> None:
    """A small JSON-schema check for the features these tests use (no extra dependency)."""
    kind = schema.get("type")
    if "enum" in schema:
        assert value in schema["enum"], (value, schema["enum"])
    if kind == "object":
        assert isinstance(value, dict)
        for key in schema.get("required", []):
            assert key in value, (key, value)
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                validate(value[key], sub)
    elif kind == "array":
        assert isinstance(value, list)
        assert len(value) <= schema.get("maxItems", len(value))
        for item in value:
            validate(item, schema["items"])
    elif kind == "string":
        assert isinstance(value, str)
        assert len(value) <= schema.get("maxLength", len(value))
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool)
    elif kind == "boolean":
        assert isinstance(value, bool)
