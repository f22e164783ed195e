"""``/api/chat`` and ``/api/generate`` (Ollama's API): the wire request to a :class:`GenRequest`.

``options`` carry the sampling settings; ``format``, ``tools`` and ``think`` take the same paths as OpenAI's
``response_format``, ``tools`` and ``reasoning_effort``. What edge-run cannot honour is a 400 naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_run.engine import MEDIA_MARKER, MediaInput
from edge_run.errors import InvalidRequest
from edge_run.serving.media import image_base64
from edge_run.serving.reasoning import Thinking, from_effort
from edge_run.serving.request import CallRecord, GenRequest, JsonOutput, Turn, function_spec

if TYPE_CHECKING:
    from edge_run.api.ollama.schemas import ChatMessage, ChatRequest, GenerateRequest, KeepAlive, Options
    from edge_run.models.registry import ModelSpec

__all__ = ["OllamaSampling", "check_context", "keep_alive_seconds", "translate_chat", "translate_generate"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def keep_alive_seconds(value: KeepAlive | None) -> float | None:
    """Ollama's ``keep_alive``: seconds, or a Go duration (``5m``, ``1h30m``, ``0``, ``-1``) as the registry takes
    it (-1: kept loaded). None: the server's setting."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        try:
            seconds = float(body)
        except ValueError:
            parts = _DURATION.findall(body)
            if not parts or "".join(n + u for n, u in parts) != body:
                raise InvalidRequest(
                    f"`keep_alive` {value[:40]!r} is not a duration: send seconds, or e.g. 5m, 1h, 0, -1",
                    param="keep_alive",
                ) from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
        value = sign * seconds
    return -1.0 if value < 0 else float(value)


@dataclass(slots=True)
class OllamaSampling:
    """``options`` as the sampler takes them (:class:`~edge_run.serving.sampling.Sampling`)."""

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    grammar: str | None = None
    reasoning_budget: int | None = None


def _refuse_inactive(options: Options) -> None:
    """Samplers llama.cpp has but edge-run does not wire: refused when they would change the answer."""
    for name, neutral in (("mirostat", 0), ("tfs_z", 1.0), ("typical_p", 1.0)):
        value = getattr(options, name)
        if value is not None and value != neutral:
            raise InvalidRequest(
                f"`options.{name}` is not supported (leave it out, or {neutral})", param=f"options.{name}"
            )


def _sampling(options: Options | None) -> OllamaSampling:
    if options is None:
        return OllamaSampling()
    _refuse_inactive(options)
    return OllamaSampling(
        temperature=options.temperature,
        top_p=options.top_p,
        seed=options.seed,
        presence_penalty=options.presence_penalty,
        frequency_penalty=options.frequency_penalty,
        top_k=options.top_k,
        min_p=options.min_p,
        repeat_penalty=options.repeat_penalty,
    )


def check_context(options: Options | None, spec: ModelSpec | None) -> None:
    """``num_ctx`` is the server's per-slot context: a request may ask for less (ignored), never for more."""
    if options is None or options.num_ctx is None or spec is None or spec.ctx is None:
        return
    if options.num_ctx > spec.ctx:
        raise InvalidRequest(
            f"`options.num_ctx` {options.num_ctx} is more than the {spec.ctx} tokens per request `{spec.id}` is "
            "served with (serve --ctx, or ctx in its [[model]] table)",
            param="options.num_ctx",
        )


def _thinking(think: bool | str | None) -> Thinking | None:
    if isinstance(think, bool):
        return Thinking(enabled=think)
    return from_effort(think)


def _output(fmt: str | dict[str, object] | None) -> JsonOutput | None:
    if fmt is None or fmt == "":
        return None
    return JsonOutput(None if fmt == "json" else dict(fmt), "format")  # type: ignore[arg-type]


def _images(images: list[str] | None, param: str) -> tuple[MediaInput, ...]:
    """Ollama's ``images``: base64 files; they go before the message's text, as Ollama puts them."""
    return tuple(image_base64(data, f"{param}[{j}]") for j, data in enumerate(images or ()))


def _with_images(text: str, media: tuple[MediaInput, ...]) -> str:
    return "\n".join([MEDIA_MARKER] * len(media) + [text]) if media else text


def _turn(m: ChatMessage, i: int) -> Turn:
    media = _images(m.images, f"messages[{i}].images")
    if media and m.role != "user":
        raise InvalidRequest("only user messages may hold images", param=f"messages[{i}].images")
    calls = tuple(
        CallRecord(c.id or f"call_{i}_{k}", c.function.name, c.function.arguments)
        for k, c in enumerate(m.tool_calls or ())
    )
    if calls and m.role != "assistant":
        raise InvalidRequest(f"`messages[{i}].tool_calls` go in assistant messages", param=f"messages[{i}].tool_calls")
    if m.role == "tool":  # Ollama names the tool a result is from, and the call only sometimes
        return Turn("tool", m.content, call_id=m.tool_call_id or m.tool_name, name=m.tool_name)
    thought = m.thinking if m.role == "assistant" else None
    return Turn(m.role, _with_images(m.content, media), reasoning=thought, calls=calls, media=media)


def _limits(options: Options | None) -> tuple[int | None, tuple[str, ...]]:
    """``num_predict`` (negative: no limit but the context; 0 is refused) and ``stop``."""
    if options is None:
        return None, ()
    if options.num_predict == 0:
        raise InvalidRequest("`options.num_predict` 0 generates nothing: send 1 or more, or -1", param="num_predict")
    budget = options.num_predict if options.num_predict is not None and options.num_predict > 0 else None
    return budget, tuple(options.stop or ())


def translate_chat(req: ChatRequest) -> GenRequest:
    max_tokens, stops = _limits(req.options)
    return GenRequest(
        model=req.model,
        sampling=_sampling(req.options),
        turns=[_turn(m, i) for i, m in enumerate(req.messages)],
        tools=[function_spec(t.function.name, t.function.description, t.function.parameters) for t in req.tools or ()],
        tool_choice=req.options.tool_choice if req.options is not None else None,
        output=_output(req.format),
        max_tokens=max_tokens,
        stops=stops,
        thinking=_thinking(req.think),
    )


def translate_generate(req: GenerateRequest) -> GenRequest:
    """A prompt through the chat template (with ``system``), or as it is with ``raw: true``."""
    for name in ("template", "suffix"):
        if getattr(req, name):
            why = "edge-run renders the model's own chat template" if name == "template" else "no fill-in-the-middle"
            raise InvalidRequest(f"`{name}` is not supported: {why}", param=name)
    if req.context:
        raise InvalidRequest("`context` is not supported: send the conversation to /api/chat", param="context")
    media = _images(req.images, "images")
    if media and req.raw:
        raise InvalidRequest("`images` go through the chat template, which `raw: true` skips", param="images")
    max_tokens, stops = _limits(req.options)
    if req.raw and req.system:
        raise InvalidRequest("`system` goes through the chat template, which `raw: true` skips", param="system")
    user = Turn("user", _with_images(req.prompt, media), media=media)
    turns = ([Turn("system", req.system)] if req.system else []) + [user]
    return GenRequest(
        model=req.model,
        sampling=_sampling(req.options),
        turns=[] if req.raw else turns,
        prompts=[req.prompt] if req.raw else None,
        output=_output(req.format),
        max_tokens=max_tokens,
        stops=stops,
        thinking=_thinking(req.think),
    )
