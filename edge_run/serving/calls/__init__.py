"""Native tool calls, parsed per model family while the answer streams.

:func:`family_of` tells a chat template's call format from its source; :class:`ToolStream` reads an
answer in that format as it is generated and :func:`parse_calls` reads a whole one. :func:`triggers`
gives the texts a family's calls begin with, for a grammar that waits for them.
"""

from __future__ import annotations

from edge_run.serving.calls.events import ParsedCall, ToolEvent
from edge_run.serving.calls.families import FAMILIES, family_of, triggers
from edge_run.serving.calls.stream import ToolStream, parse_calls

__all__ = ["FAMILIES", "ParsedCall", "ToolEvent", "ToolStream", "family_of", "parse_calls", "triggers"]
