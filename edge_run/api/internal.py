"""The one internal request every generating route translates to, and how it starts on an engine.

Chat completions, completions, responses and messages each turn their wire request into a
:class:`GenRequest`; :func:`start` checks what they share (tools, output format, sampling), renders
the prompt and admits it. :mod:`.assembly` reads the answer back for every wire format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from edge_run.api.assembly import Run
from edge_run.api.tools import CallPlan, check_schema, plan_tools
from edge_run.engine import SamplerSpec, json_grammar
from edge_run.errors import InvalidRequest

if TYPE_CHECKING:
    from edge_run.api.schemas import SamplingFields
    from edge_run.engine import Engine

__all__ = [
    "CallRecord",
    "GenRequest",
    "JsonOutput",
    "Turn",
    "arguments",
    "count_tokens",
    "function_spec",
    "join_text",
    "start",
    "unsupported_input",
]


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A tool call already in the conversation."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the conversation, whatever wire format it came in."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    calls: tuple[CallRecord, ...] = ()  # assistant turns: the tools it called
    call_id: str | None = None  # tool turns: the call this answers
    name: str | None = None


@dataclass(frozen=True, slots=True)
class JsonOutput:
    """The answer must be JSON: an object matching ``schema``, or any object when it is ``None``."""

    schema: dict[str, Any] | None
    param: str  # the wire field that asked for it, named in errors


@dataclass
class GenRequest:
    """A generation request, as every route asks for one."""

    model: str
    sampling: SamplingFields
    turns: list[Turn] = field(default_factory=list)  # a conversation, rendered by the chat template...
    prompts: list[str] | None = None  # ... or raw prompts (legacy completions), one generation each
    tools: list[dict[str, Any]] = field(default_factory=list)  # see function_spec
    tool_choice: str | None = None  # "none", "auto", "required" or a function name; None: "auto"
    output: JsonOutput | None = None
    max_tokens: int | None = None
    stops: tuple[str, ...] = ()
    n: int = 1
    top_logprobs: int | None = None  # None: no logprobs


def function_spec(name: str, description: str | None, parameters: dict[str, Any] | None) -> dict[str, Any]:
    """A tool as chat templates and the tool planner take it (OpenAI's ``function`` object)."""
    spec: dict[str, Any] = {"name": name}
    if description is not None:
        spec["description"] = description
    if parameters is not None:
        spec["parameters"] = parameters
    return spec


def arguments(text: str, param: str) -> dict[str, Any]:
    """A call's JSON arguments, as a client sent them back in the conversation."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"`{param}` is not valid JSON: {exc}", param=param) from exc
    if not isinstance(value, dict):
        raise InvalidRequest(f"`{param}` must be a JSON object", param=param)
    return value


def unsupported_input(param: str) -> InvalidRequest:
    return InvalidRequest("image and file inputs are not supported by this model", param=param)


def join_text(parts: list[str | None], param: str) -> str:
    """A message's text parts as one string; ``None`` stands for a part that is not text (refused)."""
    for j, part in enumerate(parts):
        if part is None:
            raise unsupported_input(f"{param}[{j}]")
    return "\n".join(p for p in parts if p is not None)


def _template_messages(turns: list[Turn], plan: CallPlan | None) -> list[dict[str, Any]]:
    """The conversation as chat templates expect it: ``content`` a plain string."""
    out: list[dict[str, Any]] = []
    generic = plan is not None and not plan.native
    for turn in turns:
        msg: dict[str, Any] = {"role": turn.role, "content": turn.content}
        if turn.name is not None:
            msg["name"] = turn.name
        if turn.calls:
            calls = [{"name": c.name, "arguments": c.arguments} for c in turn.calls]
            if generic:  # the model saw calls as JSON text: show it its own format back
                msg["content"] = (turn.content + "\n" if turn.content else "") + "\n".join(map(json.dumps, calls))
            else:
                msg["tool_calls"] = [{"type": "function", "id": c.id, "function": f}
                                     for c, f in zip(turn.calls, calls, strict=True)]  # fmt: skip
        if turn.role == "tool":
            msg["tool_call_id"] = turn.call_id
            if generic:
                msg = {"role": "user", "content": f"Function result ({turn.call_id}): {turn.content}"}
        out.append(msg)
    if generic and plan is not None and plan.system_prompt:
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": (out[0]["content"] + "\n\n" + plan.system_prompt).strip()}
        else:
            out.insert(0, {"role": "system", "content": plan.system_prompt})
    return out


# A plain answer in generic tool mode: anything that does not open a JSON object.
_TEXT_RULE = "edge-text ::= [^{ \\t\\n] [^\\x00]*\n"


def _grammar(req: GenRequest, plan: CallPlan | None) -> str | None:
    out = req.output
    if plan is not None and plan.call_schema is not None:
        if out is not None:
            raise InvalidRequest(f"`{out.param}` cannot be combined with forced tool calls", param=out.param)
        _check(plan.call_schema, "tools")
        gbnf = json_grammar(plan.call_schema)
        if not plan.allow_text:
            return gbnf
        return gbnf.replace("root ::=", "edge-call ::=", 1) + "\nroot ::= edge-call | edge-text\n" + _TEXT_RULE
    if out is None:
        return None
    schema = out.schema
    if schema is not None:
        _check(schema, out.param)
    return json_grammar(schema)


def _check(schema: Any, param: str) -> None:
    try:
        check_schema(schema, "$")
    except ValueError as exc:
        raise InvalidRequest(str(exc), param=param) from exc


def _sampler(fields: SamplingFields, engine: Engine, grammar: str | None) -> SamplerSpec:
    bias: list[tuple[int, float]] = []
    n_vocab = engine.n_vocab
    for key, value in (fields.logit_bias or {}).items():
        if not key.lstrip("-").isdigit() or not 0 <= int(key) < n_vocab:
            raise InvalidRequest(f"logit_bias key {key!r} is not a token id of this model", param="logit_bias")
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
    )


def _plan(req: GenRequest, engine: Engine) -> CallPlan | None:
    choice = req.tool_choice
    if not req.tools:
        if choice not in (None, "none", "auto"):
            raise InvalidRequest("`tool_choice` needs `tools`", param="tool_choice")
        return None
    if choice not in (None, "none", "auto", "required") and choice not in {f["name"] for f in req.tools}:
        raise InvalidRequest(f"`tool_choice` names `{choice}`, which is not in `tools`", param="tool_choice")
    return plan_tools(req.tools, choice, native=engine.native_tools)


@dataclass
class _Prompt:
    tokens: list[list[int]]  # one token list per generation
    plan: CallPlan | None

    @property
    def native(self) -> bool:
        return self.plan is not None and self.plan.native


async def _render(req: GenRequest, engine: Engine) -> _Prompt:
    if req.prompts is not None:
        tokens = [await engine.tokenize(text) for text in req.prompts]
        if not all(tokens):
            raise InvalidRequest("`prompt` is empty", param="prompt")
        return _Prompt(tokens, None)
    plan = _plan(req, engine)
    native = plan is not None and plan.native
    tools = [{"type": "function", "function": f} for f in req.tools] if native else None
    return _Prompt([await engine.prompt_tokens(_template_messages(req.turns, plan), tools)], plan)


async def count_tokens(req: GenRequest, engine: Engine) -> int:
    """How many tokens the prompt takes, tools and all, as :func:`start` would render it."""
    return sum(map(len, (await _render(req, engine)).tokens))


async def start(req: GenRequest, engine: Engine) -> Run:
    """Validate, render, tokenize and admit; every client error surfaces here, before any output."""
    prompt = await _render(req, engine)
    spec = _sampler(req.sampling, engine, _grammar(req, prompt.plan))
    run = Run(parts=[], n=req.n, plan=prompt.plan)
    try:
        for tokens in prompt.tokens:
            gen = await engine.generate(
                tokens, spec, max_tokens=req.max_tokens, stops=req.stops, n=req.n, top_logprobs=req.top_logprobs
            )
            run.parts.append((len(tokens), gen))
    except BaseException:
        run.cancel()
        raise
    return run
