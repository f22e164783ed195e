"""GBNF grammars for JSON output (``response_format``, tool calls).

``llama_cpp``'s converter is imported at the first call: the serving layer builds grammars, and importing
it must not load llama.cpp.
"""

from __future__ import annotations

import json
from typing import Any

from edge_run.errors import InvalidRequest

__all__ = ["json_grammar"]


def json_grammar(schema: dict[str, Any] | None) -> str:
    """GBNF for any JSON object (``schema=None``) or for values of a JSON schema.

    Whitespace is reduced to at most one space between tokens: small models otherwise drift into
    endless newlines inside a grammar that allows them.
    """
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if schema is None:
        return JSON_GBNF.replace('ws ::= | " " | "\\n" [ \\t]{0,20}', 'ws ::= " "?')
    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare Exceptions for unsupported features
        raise InvalidRequest(f"unsupported JSON schema: {exc}", param="response_format") from exc
    return "\n".join('space ::= " "?' if line.startswith("space ::=") else line for line in gbnf.splitlines())
