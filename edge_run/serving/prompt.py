"""A request checked, its prompt rendered (chat template or raw text) and tokenized, and started on an engine.

:func:`check` runs every check that needs no model, before the model registry is touched, so a bad
request never loads or evicts a model. :func:`start` checks what only the loaded model can tell (its
vocabulary, whether its template renders tools), renders, tokenizes and admits: every client error
surfaces before any output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge_run.engine import ThoughtLimit
from edge_run.errors import InvalidRequest
from edge_run.serving.assembly import Run
from edge_run.serving.calls import family_of
from edge_run.serving.lazy import HELD, lazy_calls
from edge_run.serving.reasoning import template_variables, think_format
from edge_run.serving.sampling import after_thought, check_bias, check_grammar, grammar, sampler_spec
from edge_run.serving.tools import CallPlan, plan_tools

if TYPE_CHECKING:
    from edge_run.engine import Engine, MediaSpan
    from edge_run.serving.reasoning import ThinkFormat
    from edge_run.serving.request import GenRequest, Turn

__all__ = ["check", "check_tools", "count_tokens", "start"]


def _template_messages(turns: list[Turn], plan: CallPlan | None) -> list[dict[str, Any]]:
    """The conversation as chat templates expect it: ``content`` a plain string."""
    out: list[dict[str, Any]] = []
    generic = plan is not None and not plan.native
    for turn in turns:
        msg: dict[str, Any] = {"role": turn.role, "content": turn.content}
        if turn.reasoning is not None:  # templates keep or drop a past thought as their family does
            msg["reasoning_content"] = turn.reasoning
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


def _plan(req: GenRequest, native: bool) -> CallPlan | None:
    choice = req.tool_choice
    if not req.tools:
        if choice not in (None, "none", "auto"):
            raise InvalidRequest("`tool_choice` needs `tools`", param="tool_choice")
        return None
    if choice not in (None, "none", "auto", "required") and choice not in {f["name"] for f in req.tools}:
        raise InvalidRequest(f"`tool_choice` names `{choice}`, which is not in `tools`", param="tool_choice")
    return plan_tools(req.tools, choice, native=native)


def check_tools(req: GenRequest) -> None:
    """``tool_choice`` against ``tools``: what rendering the prompt checks, known before any model is loaded."""
    _plan(req, native=True)


def check(req: GenRequest) -> None:
    """Every check that needs no model. A model whose template does not render tools may still refuse an output
    format beside tools (its calls are held by a grammar too), and a ``logit_bias`` token outside its vocabulary."""
    # a native plan holds calls by grammar only when they are forced: what any model refuses
    check_grammar(req.output, _plan(req, native=True), req.sampling.grammar)
    check_bias(req.sampling)


@dataclass
class _Prompt:
    tokens: list[list[int]]  # one token list per generation
    plan: CallPlan | None
    think: ThinkFormat | None = None  # how the answer's thought is told apart, when the model thinks
    opened: bool = False  # the prompt ends inside a thought
    family: str = "generic"  # the tool-call format the answer is read in
    media: list[MediaSpan] = field(default_factory=list)  # the images and audio among ``tokens`` (one generation)


async def _render(req: GenRequest, engine: Engine) -> _Prompt:
    if req.prompts is not None:
        tokens = [await engine.tokenize(text) for text in req.prompts]
        if not all(tokens):
            raise InvalidRequest("`prompt` is empty", param="prompt")
        return _Prompt(tokens, None)
    template = engine.template
    assert template is not None
    variables = template_variables(req.thinking, req.template_kwargs, template.variables)
    plan = _plan(req, engine.native_tools)
    native = plan is not None and plan.native
    # templates read a tool's description and properties unchecked (gpt-oss): give them empty ones
    blank = {"description": "", "parameters": {"type": "object", "properties": {}}}
    tools = [{"type": "function", "function": {**blank, **f}} for f in req.tools] if native else None
    messages = _template_messages(req.turns, plan)
    media = [m for turn in req.turns for m in turn.media]
    spans: list[MediaSpan] = []
    if media:
        text, ids, spans = await engine.render_media_prompt(messages, tools, variables, media)
    else:
        text, ids = await engine.render_prompt(messages, tools, variables)
    think = think_format(template.source) if engine.options.reasoning_format == "auto" else None
    opened = think is not None and not think.harmony and text.rstrip().endswith(think.open)
    family = family_of(template.source) if native else "generic"
    if plan is not None and plan.call_schema is not None and (family not in HELD or family == "harmony"):
        family = "generic"  # a forced call of a family whose grammar is not written here: generic mode's JSON
    return _Prompt([ids], plan, think, opened, family, spans)


def _held(req: GenRequest, prompt: _Prompt, source: str) -> tuple[str | None, tuple[str, ...]]:
    """The grammar that holds the answer, and the patterns it waits for (none: it holds from the start).

    A native family's calls: when forced, in the family's own syntax from the start (after the thought); else
    free to come, held once they do (a lazy grammar)."""
    held = grammar(req.output, prompt.plan, req.sampling.grammar, prompt.think, prompt.opened)
    plan = prompt.plan
    if plan is None or prompt.family == "generic" or req.sampling.grammar is not None:
        return held, ()
    if plan.call_schema is not None:
        named = req.tool_choice not in (None, "auto", "required")
        forced = [f for f in req.tools if not named or f["name"] == req.tool_choice]
        made = lazy_calls(prompt.family, forced, None, source)
        assert made is not None  # HELD families only (see _render)
        own = made[0]
        return (after_thought(own, prompt.think, prompt.opened) if prompt.think is not None else own), ()
    return (held, ()) if held is not None else lazy_calls(prompt.family, req.tools, prompt.think, source) or (None, ())


def _thought_limit(req: GenRequest, prompt: _Prompt, default: int) -> ThoughtLimit | None:
    """The thinking budget: the request's, else the server's (-1: none)."""
    budget = req.thinking.budget if req.thinking is not None and req.thinking.budget is not None else default
    if prompt.think is None or budget < 0:
        return None
    think = prompt.think
    return ThoughtLimit(budget, think.open, think.close, think.closing, prompt.opened)


async def count_tokens(req: GenRequest, engine: Engine) -> int:
    """How many tokens the prompt takes, tools and all, as :func:`start` would render it."""
    return sum(map(len, (await _render(req, engine)).tokens))


async def start(req: GenRequest, engine: Engine) -> Run:
    """Check what needs the model, render, tokenize and admit; every client error surfaces here, before any output."""
    prompt = await _render(req, engine)
    held, triggers = _held(req, prompt, engine.template.source if engine.template is not None else "")
    spec = sampler_spec(req.sampling, engine.n_vocab, held, triggers)
    schemas = {f["name"]: f.get("parameters") for f in req.tools}
    run = Run(parts=[], n=req.n, plan=prompt.plan, think=prompt.think, opened=prompt.opened, family=prompt.family,
              schemas=schemas)  # fmt: skip
    thought = _thought_limit(req, prompt, engine.options.reasoning_budget)
    try:
        for tokens in prompt.tokens:
            gen = await engine.generate(
                tokens,
                spec,
                max_tokens=req.max_tokens,
                stops=req.stops,
                n=req.n,
                top_logprobs=req.top_logprobs,
                thought=thought,
                **({"media": prompt.media} if prompt.media else {}),
            )
            run.parts.append((len(tokens), gen))
    except BaseException:
        run.cancel()
        raise
    return run
