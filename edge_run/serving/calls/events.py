"""What a tool-enabled answer is read into: content, call headers and argument fragments.

Kept apart from the parsers so the wire formats (OpenAI, Anthropic, Responses) depend on these two
shapes only, whichever model family produced them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ParsedCall", "ToolEvent"]


@dataclass(frozen=True)
class ParsedCall:
    id: str
    name: str
    arguments: str  # a JSON string, as OpenAI sends it


@dataclass
class ToolEvent:
    content: str | None = None
    call: ParsedCall | None = None  # a call's header (id, name) with its first arguments
    arguments: str | None = None  # a later fragment of the current call's arguments
