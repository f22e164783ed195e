"""Lazy grammars for a native family's calls, as llama-server's: the answer is free text until the family's call
begins, then the call is held to its tool's schema.

Each grammar starts at the family's trigger (the sampler feeds it from there): Hermes/Qwen ``<tool_call>``,
Granite ``<|tool_call|>``, Mistral ``[TOOL_CALLS]`` (v11's ``NAME[ARGS]{...}`` when the template writes
``[ARGS]``, else v3's JSON list), DeepSeek's calls-begin token (R1's fenced JSON, V3's bare), Llama 3's
``<|python_tag|>`` or a bare call that opens the answer. For a thinking model the trigger counts only after
the thought, or first thing in an answer without one: a call written inside a thought is not a call.
Qwen3-Coder's ``<tool_call><function=NAME><parameter=P>`` (a string parameter free text, any other its schema's
JSON) and harmony's ``to=functions.NAME ... <|message|>{...}`` too. Gemma 4's calls are read (:mod:`.calls`)
but not held.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from edge_run.engine import json_grammar
from edge_run.serving.calls.json_calls import CALL_BEGIN, CALL_END, CALLS_BEGIN, CALLS_END, SEP
from edge_run.serving.tools import call_schema

if TYPE_CHECKING:
    from edge_run.serving.reasoning import ThinkFormat

__all__ = ["HELD", "lazy_calls"]

HELD = frozenset({"hermes", "granite", "mistral", "deepseek_r1", "deepseek_v3", "llama3", "qwen3_coder", "harmony"})

_WS = "[ \\t\\n]*"
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\[(?:[^\]\\]|\\.)*\]|[A-Za-z0-9_-]+|.', re.S)


def _renamed(gbnf: str, prefix: str) -> str:
    """``gbnf`` with each of its rules renamed ``prefix-NAME``, so that several converted schemas live in one."""
    names = {line.split(" ::=", 1)[0] for line in gbnf.splitlines() if " ::=" in line}
    return "".join(f"{prefix}-{t}" if t in names else t for t in _TOKEN.findall(gbnf))


def _each(functions: list[dict[str, Any]], shape: str) -> str:
    """One rule ``edge-fn``: a function's name then its arguments, for each function (``shape`` places them)."""
    args = [_renamed(json_grammar(f.get("parameters") or {"type": "object"}), f"edge-f{k}") for k, f in
            enumerate(functions)]  # fmt: skip
    ways = [shape.format(name=json.dumps(f["name"]), args=f"edge-f{k}-root") for k, f in enumerate(functions)]
    return "edge-fn ::= " + " | ".join(ways) + "\n" + "\n".join(args)


def _calls(functions: list[dict[str, Any]], key: str = "arguments") -> str:
    """One rule ``edge-call``: a JSON call object ``{"name": ..., key: {...}}`` of any of the functions."""
    schema = call_schema(functions)
    if key != "arguments":
        text = json.dumps(schema).replace('"arguments"', json.dumps(key))
        schema = json.loads(text)
    return json_grammar(schema).replace("root ::=", "edge-call ::=", 1)


def _grammar(family: str, functions: list[dict[str, Any]], template: str) -> tuple[str, str] | None:
    """(the trigger, the grammar from it on) for ``family``; None for a family whose calls are not held."""
    lit = json.dumps
    if family == "hermes":
        one = f'edge-one ::= "<tool_call>" {_WS} edge-call {_WS} "</tool_call>"'
        return "<tool_call>", f"root ::= edge-one ({_WS} edge-one)*\n{one}\n{_calls(functions)}"
    if family == "granite":
        return "<|tool_call|>", f'root ::= "<|tool_call|>" {_WS} "[" edge-call ("," {_WS} edge-call)* "]"\n' + _calls(
            functions
        )
    if family == "mistral" and "[ARGS]" in template:
        fn = _each(functions, '{name} ("[CALL_ID]" [A-Za-z0-9]+)? "[ARGS]" {args}')
        return "[TOOL_CALLS]", f'root ::= "[TOOL_CALLS]" edge-fn ({_WS} "[TOOL_CALLS]" edge-fn)*\n{fn}'
    if family == "mistral":
        return "[TOOL_CALLS]", f'root ::= "[TOOL_CALLS]" {_WS} "[" edge-call ("," {_WS} edge-call)* "]"\n' + _calls(
            functions
        )
    if family in ("deepseek_r1", "deepseek_v3"):
        fenced = family == "deepseek_r1"
        shape = '"function" ' + lit(SEP) + ' {name} "\\n```json\\n" {args} "\\n"? "```"' if fenced else (
            "{name} " + lit(SEP) + " {args}"
        )  # fmt: skip
        one = f"edge-one ::= {lit(CALL_BEGIN)} edge-fn {lit(CALL_END)}"
        root = f"root ::= {lit(CALLS_BEGIN)} ({_WS} edge-one)+ {_WS} {lit(CALLS_END)}?"
        return CALLS_BEGIN, f"{root}\n{one}\n{_each(functions, shape)}"
    if family == "llama3":
        return "<|python_tag|>", f'root ::= "<|python_tag|>"? {_WS} edge-call\n{_calls(functions, "parameters")}'
    if family == "qwen3_coder":
        one = f'edge-one ::= "<tool_call>" {_WS} "<function=" edge-fn {_WS} "</function>" {_WS} "</tool_call>"'
        return "<tool_call>", f"root ::= edge-one ({_WS} edge-one)*\n{one}\n{_xml(functions)}"
    if family == "harmony":  # the recipient, then maybe the channel and the constraint, then the JSON message
        head = '" "? ("<|channel|>commentary")? " "? "<|constrain|>"? "json"? "<|message|>"'
        return "to=functions.", f'root ::= "to=functions." edge-fn\n{_each(functions, "{name} " + head + " {args}")}'
    return None


def _xml(functions: list[dict[str, Any]]) -> str:
    """Qwen3-Coder's functions: each parameter in the schema's order (a required one always), its value bare
    text for a string and its schema's JSON otherwise."""
    ways, rules = [], []
    for k, f in enumerate(functions):
        schema = f.get("parameters") or {}
        required = set(schema.get("required") or ())
        params = []
        for j, (name, sub) in enumerate((schema.get("properties") or {}).items()):
            rule = f"edge-f{k}-p{j}"
            if isinstance(sub, dict) and sub.get("type") == "string":
                rules.append(f'{rule} ::= ([^<] | "<" [^/])*')
            else:
                rules.append(_renamed(json_grammar(sub if isinstance(sub, dict) else {}), rule).replace(
                    f"{rule}-root ::=", f"{rule} ::=", 1))  # fmt: skip
            one = f'"<parameter={name}>" "\\n"? {rule} "\\n"? "</parameter>" {_WS}'
            params.append(f"({one})" + ("" if name in required else "?"))
        ways.append(f'{json.dumps(f["name"])} ">" {_WS} ' + " ".join(params))
    return "edge-fn ::= " + " | ".join(ways) + "\n" + "\n".join(rules)


def lazy_calls(
    family: str, functions: list[dict[str, Any]], think: ThinkFormat | None, template: str
) -> tuple[str, tuple[str, ...]] | None:
    """The grammar and its trigger patterns (regular expressions) for ``family``'s calls; None when not held."""
    made = _grammar(family, functions, template) if functions else None
    if made is None:
        return None
    trigger, gbnf = made
    call = "(" + _regex(trigger) + ")"
    if family == "harmony":  # its thought is a channel of its own: a recipient is a call wherever it comes
        return gbnf + "\n", (call,)
    first = "^\\s*" + call + "[\\s\\S]*$"  # first thing in the answer
    if family == "llama3":
        first = '^\\s*(\\{\\s*"name"\\s*:)[\\s\\S]*$'  # Llama 3 also calls with a bare object, first thing
    patterns = (call, first) if think is None else (_regex(think.close) + "[\\s\\S]*?" + call, first)
    return gbnf + "\n", patterns


def _regex(text: str) -> str:
    """``text`` as a literal in a C++ std::regex (ECMAScript), escaped as llama.cpp escapes trigger words."""
    return "".join("\\" + c if c in ".^$|()*+?[]{}\\" else c for c in text)
