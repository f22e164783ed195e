"""``POST /v1/chat/completions``: request Struct to engine call, token streams to JSON or SSE."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from edge_run.api.errors import error_body
from edge_run.api.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    CompletionRequest,
    Delta,
    FunctionDelta,
    ImagePart,
    JsonObjectFormat,
    JsonSchemaFormat,
    PromptTokensDetails,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    ToolCallFunction,
    TopLogprob,
    Usage,
)
from edge_run.api.tools import CallPlan, ToolEvent, ToolStream, check_schema, plan_tools
from edge_run.engine.engine import Engine, Generation
from edge_run.engine.llama import SamplerSpec, json_grammar
from edge_run.engine.scheduler import Chunk
from edge_run.engine.scheduler import TokenLogprob as EngineLogprob
from edge_run.errors import EdgeRunError, InvalidRequest

__all__ = ["Run", "complete", "sampling_spec", "sse", "start", "stop_list", "stream"]

_encode = msgspec.json.Encoder().encode


def sse(body: object) -> bytes:
    """One server-sent event frame holding ``body`` as JSON."""
    return b"data: " + _encode(body) + b"\n\n"


def stop_list(stop: str | list[str] | None) -> tuple[str, ...]:
    return (stop,) if isinstance(stop, str) else tuple(stop or ())


# A plain answer in generic tool mode: anything that does not open a JSON object.
_TEXT_RULE = "edge-text ::= [^{ \\t\\n] [^\\x00]*\n"


@dataclass
class Run:
    """A started request: its generation plus how to read tool calls out of it."""

    gen: Generation
    plan: CallPlan | None
    native: bool
    prompt_tokens: int = 0


def template_messages(req: ChatCompletionRequest, plan: CallPlan | None) -> list[dict[str, Any]]:
    """Messages as chat templates expect them: ``content`` a plain string."""
    out: list[dict[str, Any]] = []
    generic = plan is not None and not plan.native
    for i, m in enumerate(req.messages):
        if isinstance(m.content, list):
            parts = []
            for j, part in enumerate(m.content):
                if isinstance(part, ImagePart):
                    raise InvalidRequest(
                        "image inputs are not supported by this model", param=f"messages[{i}].content[{j}]"
                    )
                parts.append(part.text)
            content = "\n".join(parts)
        else:
            content = m.content or ""
        role = "system" if m.role == "developer" else m.role
        msg: dict[str, Any] = {"role": role, "content": content}
        if m.name is not None:
            msg["name"] = m.name
        if m.tool_calls:
            calls = [{"name": c.function.name, "arguments": json.loads(c.function.arguments or "{}")}
                     for c in m.tool_calls]  # fmt: skip
            if generic:  # the model saw calls as JSON text: show it its own format back
                msg["content"] = (content + "\n" if content else "") + "\n".join(json.dumps(c) for c in calls)
            else:
                msg["tool_calls"] = [{"type": "function", "id": c.id, "function": dict(f)}
                                     for c, f in zip(m.tool_calls, calls, strict=True)]  # fmt: skip
        if m.role == "tool":
            msg["tool_call_id"] = m.tool_call_id
            if generic:
                msg = {"role": "user", "content": f"Function result ({m.tool_call_id}): {content}"}
        out.append(msg)
    if generic and plan is not None and plan.system_prompt:
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": (out[0]["content"] + "\n\n" + plan.system_prompt).strip()}
        else:
            out.insert(0, {"role": "system", "content": plan.system_prompt})
    return out


def _grammar(req: ChatCompletionRequest, plan: CallPlan | None) -> str | None:
    fmt = req.response_format
    if plan is not None and plan.call_schema is not None:
        if isinstance(fmt, JsonObjectFormat | JsonSchemaFormat):
            raise InvalidRequest("`response_format` cannot be combined with forced tool calls", param="response_format")
        _check(plan.call_schema, "tools")
        gbnf = json_grammar(plan.call_schema)
        if not plan.allow_text:
            return gbnf
        return gbnf.replace("root ::=", "edge-call ::=", 1) + "\nroot ::= edge-call | edge-text\n" + _TEXT_RULE
    if isinstance(fmt, JsonObjectFormat):
        return json_grammar(None)
    if isinstance(fmt, JsonSchemaFormat):
        schema = fmt.json_schema.schema or {"type": "object"}
        _check(schema, "response_format")
        return json_grammar(schema)
    return None


def _check(schema: Any, param: str) -> None:
    try:
        check_schema(schema, "$")
    except ValueError as exc:
        raise InvalidRequest(str(exc), param=param) from exc


def sampling_spec(req: ChatCompletionRequest | CompletionRequest, engine: Engine, grammar: str | None) -> SamplerSpec:
    """The sampling fields both completion routes share, in llama.cpp's terms."""
    bias: list[tuple[int, float]] = []
    n_vocab = engine.model.n_vocab if engine.model else 0
    for key, value in (req.logit_bias or {}).items():
        if not key.lstrip("-").isdigit() or not 0 <= int(key) < n_vocab:
            raise InvalidRequest(f"logit_bias key {key!r} is not a token id of this model", param="logit_bias")
        bias.append((int(key), value))
    return SamplerSpec(
        temperature=1.0 if req.temperature is None else req.temperature,
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        min_p=req.min_p or 0.0,
        repeat_penalty=req.repeat_penalty or 1.0,
        frequency_penalty=req.frequency_penalty or 0.0,
        presence_penalty=req.presence_penalty or 0.0,
        seed=req.seed,
        logit_bias=tuple(bias),
        grammar=grammar,
    )


def _plan(req: ChatCompletionRequest, engine: Engine) -> CallPlan | None:
    if not req.tools:
        if req.tool_choice not in (None, "none", "auto"):
            raise InvalidRequest("`tool_choice` needs `tools`", param="tool_choice")
        return None
    functions = [msgspec.to_builtins(t.function) for t in req.tools]
    choice: str | None
    if req.tool_choice is None or isinstance(req.tool_choice, str):
        choice = req.tool_choice
    else:
        choice = req.tool_choice.function.name
        if choice not in {f["name"] for f in functions}:
            raise InvalidRequest(f"`tool_choice` names `{choice}`, which is not in `tools`", param="tool_choice")
    return plan_tools(functions, choice, native=engine.native_tools)


async def start(req: ChatCompletionRequest, engine: Engine) -> Run:
    """Validate, render, tokenize and admit; every client error surfaces here, before any output."""
    if req.top_logprobs is not None and not req.logprobs:
        raise InvalidRequest("`top_logprobs` needs `logprobs: true`", param="top_logprobs")
    plan = _plan(req, engine)
    stops = stop_list(req.stop)
    spec = sampling_spec(req, engine, _grammar(req, plan))
    native = plan is not None and plan.native
    tools = [msgspec.to_builtins(t) for t in req.tools or ()] if native else None
    prompt = await engine.prompt_tokens(template_messages(req, plan), tools)
    gen = await engine.generate(
        prompt,
        spec,
        max_tokens=req.max_completion_tokens or req.max_tokens,
        stops=stops,
        n=req.n,
        top_logprobs=(req.top_logprobs or 0) if req.logprobs else None,
    )
    return Run(gen=gen, plan=plan, native=native, prompt_tokens=len(prompt))


def _logprobs(items: list[EngineLogprob]) -> list[TokenLogprob]:
    def text(b: bytes) -> str:
        return b.decode("utf-8", "replace")

    return [
        TokenLogprob(
            token=text(t.token),
            logprob=t.logprob,
            bytes=list(t.token),
            top_logprobs=[TopLogprob(token=text(b), logprob=lp, bytes=list(b)) for b, lp in t.top],
        )
        for t in items
    ]


def _usage(run: Run, completion_tokens: int, cached: int) -> Usage:
    return Usage(
        prompt_tokens=run.prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=run.prompt_tokens + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached),
    )


def _new_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


async def complete(req: ChatCompletionRequest, run: Run) -> ChatCompletion:
    n = req.n
    texts: list[list[str]] = [[] for _ in range(n)]
    logprobs: list[list[EngineLogprob]] = [[] for _ in range(n)]
    last = [Chunk() for _ in range(n)]
    async for chunk in run.gen:
        texts[chunk.index].append(chunk.text)
        logprobs[chunk.index] += chunk.logprobs or []
        last[chunk.index] = chunk
    choices = []
    for i in range(n):
        text = "".join(texts[i])
        content: str | None = text
        calls: list[ToolCall] | None = None
        finish = last[i].finish_reason or "stop"
        if run.plan is not None:
            content, parsed = ToolStream(run.native).collect(text)
            if parsed:
                calls = [ToolCall(id=c.id, function=ToolCallFunction(c.name, c.arguments)) for c in parsed]
                finish = "tool_calls"
        choices.append(
            Choice(
                index=i,
                message=ChatMessage(content=content, tool_calls=calls),
                finish_reason=finish,
                logprobs=ChoiceLogprobs(content=_logprobs(logprobs[i])) if req.logprobs else None,
            )
        )
    return ChatCompletion(
        id=_new_id(),
        created=int(time.time()),
        model=req.model,
        choices=choices,
        usage=_usage(run, sum(c.completion_tokens for c in last), last[0].cached_tokens),
    )


def _tool_deltas(events: list[ToolEvent], calls_seen: list[int]) -> tuple[str, list[ToolCallDelta]]:
    """OpenAI's tool-call delta shape: index, id, type and name first; then ``arguments`` fragments."""
    content = ""
    deltas: list[ToolCallDelta] = []
    for e in events:
        if e.content:
            content += e.content
        if e.call is not None:
            calls_seen[0] += 1
            idx = calls_seen[0] - 1
            head = FunctionDelta(name=e.call.name, arguments="")
            deltas.append(ToolCallDelta(index=idx, id=e.call.id, type="function", function=head))
            if e.call.arguments:
                deltas.append(ToolCallDelta(index=idx, function=FunctionDelta(arguments=e.call.arguments)))
        if e.arguments:
            deltas.append(ToolCallDelta(index=calls_seen[0] - 1, function=FunctionDelta(arguments=e.arguments)))
    return content, deltas


async def stream(req: ChatCompletionRequest, run: Run) -> AsyncIterator[bytes]:
    """SSE frames, one per engine step's text; all that are ready go out in one write. A client that leaves frees
    its slots."""
    cid, created = _new_id(), int(time.time())
    n = req.n
    streams = [ToolStream(run.native) for _ in range(n)] if run.plan is not None else None
    calls_seen = [[0] for _ in range(n)]

    def frame(choices: list[ChunkChoice], usage: Usage | None = None) -> bytes:
        body = ChatCompletionChunk(id=cid, created=created, model=req.model, choices=choices, usage=usage)
        return sse(body)

    completion_tokens = [0] * n
    cached = 0

    def frames(chunk: Chunk) -> Iterator[bytes]:
        nonlocal cached
        i = chunk.index
        completion_tokens[i] = chunk.completion_tokens
        cached = chunk.cached_tokens
        content, tools = chunk.text, list[ToolCallDelta]()
        finish = chunk.finish_reason
        if streams is not None:
            content, tools = _tool_deltas(streams[i].push(chunk.text), calls_seen[i])
            if finish is not None:
                more, was_call = streams[i].finish()
                extra_content, extra_tools = _tool_deltas(more, calls_seen[i])
                content, tools = content + extra_content, tools + extra_tools
                finish = "tool_calls" if was_call else finish
        lp = ChoiceLogprobs(content=_logprobs(chunk.logprobs)) if chunk.logprobs else None
        if content or tools or lp is not None:
            delta = Delta(content=content or None, tool_calls=tools or None)
            yield frame([ChunkChoice(index=i, delta=delta, logprobs=lp)])
        if finish is not None:
            yield frame([ChunkChoice(index=i, delta=Delta(), finish_reason=finish)])

    try:
        yield b"".join(frame([ChunkChoice(index=i, delta=Delta(role="assistant", content=""))]) for i in range(n))
        try:
            async for ready in run.gen.batches():  # whatever is ready goes out in one write
                if out := b"".join(f for chunk in ready for f in frames(chunk)):
                    yield out
        except EdgeRunError as exc:  # headers are gone: report in-band, as OpenAI does
            yield sse(error_body(exc))
            return
        usage = b""
        if req.stream_options is not None and req.stream_options.include_usage:
            usage = frame([], _usage(run, sum(completion_tokens), cached))
        yield usage + b"data: [DONE]\n\n"
    finally:
        run.gen.cancel()
