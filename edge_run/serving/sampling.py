"""A request's sampling settings in the engine's terms: the wire fields to a ``SamplerSpec``, and its grammar."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

from edge_run.engine import SamplerSpec, json_grammar
from edge_run.errors import InvalidRequest
from edge_run.serving.tools import check_schema

if TYPE_CHECKING:
    from edge_run.serving.reasoning import ThinkFormat
    from edge_run.serving.request import JsonOutput
    from edge_run.serving.tools import CallPlan

__all__ = ["Sampling", "after_thought", "check_bias", "check_grammar", "grammar", "sampler_spec"]


class Sampling(Protocol):
    """The sampling fields every generating wire request shares (OpenAI's, and llama.cpp's ``top_k``...)."""

    temperature: float | None
    top_p: float | None
    seed: int | None
    presence_penalty: float | None
    frequency_penalty: float | None
    logit_bias: dict[str, float] | None
    top_k: int | None
    min_p: float | None
    repeat_penalty: float | None
    grammar: str | None  # GBNF for the whole answer, as llama.cpp's `grammar` field
    reasoning_budget: int | None  # a thought's tokens at most


def _bias_error(key: str) -> InvalidRequest:
    return InvalidRequest(f"logit_bias key {key!r} is not a token id of this model", param="logit_bias")


def check_bias(fields: Sampling) -> None:
    """``logit_bias`` keys must be token ids; whether each is in the model's vocabulary is known once it is loaded."""
    for key in fields.logit_bias or {}:
        if not key.lstrip("-").isdigit() or int(key) < 0:
            raise _bias_error(key)


def sampler_spec(fields: Sampling, n_vocab: int, grammar: str | None, triggers: tuple[str, ...] = ()) -> SamplerSpec:
    bias: list[tuple[int, float]] = []
    for key, value in (fields.logit_bias or {}).items():
        if not key.lstrip("-").isdigit() or not 0 <= int(key) < n_vocab:
            raise _bias_error(key)
        bias.append((int(key), value))
    return SamplerSpec(
        temperature=1.0 if fields.temperature is None else fields.temperature,
        top_p=1.0 if fields.top_p is None else fields.top_p,
        top_k=fields.top_k or 0,
        min_p=fields.min_p or 0.0,
        repeat_penalty=fields.repeat_penalty or 1.0,
        frequency_penalty=fields.frequency_penalty or 0.0,
        presence_penalty=fields.presence_penalty or 0.0,
        seed=fields.seed,
        logit_bias=tuple(bias),
        grammar=grammar,
        triggers=triggers if grammar is not None else (),
    )


# A plain answer in generic tool mode: anything that does not open a JSON object.
_TEXT_RULE = "edge-text ::= [^{ \\t\\n] [^\\x00]*\n"


def check_grammar(output: JsonOutput | None, plan: CallPlan | None, gbnf: str | None = None) -> None:
    """Refuse what the grammar could not enforce: a schema keyword it lacks, or output format with forced calls
    (or with a request's own GBNF)."""
    if gbnf is not None and (output is not None or (plan is not None and plan.call_schema is not None)):
        param = output.param if output is not None else "tool_choice"
        raise InvalidRequest(f"`grammar` cannot be combined with `{param}`", param="grammar")
    if plan is not None and plan.call_schema is not None:
        if output is not None:
            raise InvalidRequest(f"`{output.param}` cannot be combined with forced tool calls", param=output.param)
        _check(plan.call_schema, "tools")
    elif output is not None and output.schema is not None:
        _check(output.schema, output.param)


def grammar(
    output: JsonOutput | None,
    plan: CallPlan | None,
    gbnf: str | None = None,
    think: ThinkFormat | None = None,
    opened: bool = False,
) -> str | None:
    """The GBNF that holds the answer: the request's own, a tool call's or the output format's (checked first);
    None: free text. A thinking model's thought comes first, free, and the grammar holds what follows it."""
    check_grammar(output, plan, gbnf)
    if gbnf is not None:
        return gbnf
    if plan is not None and plan.call_schema is not None:
        gbnf = json_grammar(plan.call_schema)
        if plan.allow_text:
            gbnf = gbnf.replace("root ::=", "edge-call ::=", 1) + "\nroot ::= edge-call | edge-text\n" + _TEXT_RULE
    elif output is not None:
        gbnf = json_grammar(output.schema)
    return after_thought(gbnf, think, opened) if gbnf is not None and think is not None else gbnf


def _literal(text: str) -> str:
    return json.dumps(text)  # a GBNF string literal escapes as JSON does


def after_thought(gbnf: str, think: ThinkFormat, opened: bool) -> str:
    """``gbnf`` held after an optional thought (a required one when the prompt opened it). The thought is free text
    but for the first two characters of its closing tag, so that the tag ends it."""
    a, b = think.close[0], think.close[1]
    thought = f"edge-thought ::= ([^{_cls(a)}] | {_literal(a)} [^{_cls(b)}])* {_literal(think.close)}"
    start = "" if opened else _literal(think.open) + " "
    then = ' "<|start|>assistant<|channel|>final<|message|>"' if think.harmony else " [ \\t\\n]*"
    lead = f"({start}edge-thought{then})" + ("" if opened else "?")
    return gbnf.replace("root ::=", "edge-answer ::=", 1) + f"\nroot ::= {lead} edge-answer\n{thought}\n"


def _cls(char: str) -> str:
    """A character for a GBNF character class."""
    return "\\" + char if char in "]\\^-[" else char


def _check(schema: Any, param: str) -> None:
    try:
        check_schema(schema, "$")
    except ValueError as exc:
        raise InvalidRequest(str(exc), param=param) from exc
