"""The one internal request every generating route translates to, and the small helpers its translations share.

Chat completions, completions, responses and messages each turn their wire request into a
:class:`GenRequest`; :mod:`.prompt` checks it, renders it and starts it on an engine, and
:mod:`.assembly` reads the answer back for every wire format.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from edge_run.engine.media import MEDIA_MARKER
from edge_run.errors import InvalidRequest

if TYPE_CHECKING:
    from edge_run.engine import MediaInput
    from edge_run.serving.reasoning import Thinking
    from edge_run.serving.sampling import Sampling

__all__ = [
    "CallRecord",
    "GenRequest",
    "JsonOutput",
    "Turn",
    "arguments",
    "function_spec",
    "join_parts",
    "join_text",
    "json_object",
    "new_id",
    "unsupported_input",
]


def new_id(prefix: str, nbytes: int = 12) -> str:
    """A fresh random id: ``prefix`` and ``nbytes`` random bytes in hex (``chatcmpl-...``, ``call_...``)."""
    return prefix + secrets.token_hex(nbytes)


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
    reasoning: str | None = None  # assistant turns: the thought before the content, when the client sent it back
    calls: tuple[CallRecord, ...] = ()  # assistant turns: the tools it called
    call_id: str | None = None  # tool turns: the call this answers
    name: str | None = None
    media: tuple[MediaInput, ...] = ()  # images and audio, one ``MEDIA_MARKER`` each in ``content``, in order


@dataclass(frozen=True, slots=True)
class JsonOutput:
    """The answer must be JSON: an object matching ``schema``, or any object when it is ``None``."""

    schema: dict[str, Any] | None
    param: str  # the wire field that asked for it, named in errors


@dataclass
class GenRequest:
    """A generation request, as every route asks for one."""

    model: str
    sampling: Sampling
    turns: list[Turn] = field(default_factory=list)  # a conversation, rendered by the chat template...
    prompts: list[str] | None = None  # ... or raw prompts (legacy completions), one generation each
    tools: list[dict[str, Any]] = field(default_factory=list)  # see function_spec
    tool_choice: str | None = None  # "none", "auto", "required" or a function name; None: "auto"
    output: JsonOutput | None = None
    max_tokens: int | None = None
    stops: tuple[str, ...] = ()
    n: int = 1
    top_logprobs: int | None = None  # None: no logprobs
    thinking: Thinking | None = None  # None: as the chat template does by default
    template_kwargs: dict[str, Any] | None = None  # `chat_template_kwargs`: more names for the template


def function_spec(name: str, description: str | None, parameters: dict[str, Any] | None) -> dict[str, Any]:
    """A tool as chat templates and the tool planner take it (OpenAI's ``function`` object)."""
    spec: dict[str, Any] = {"name": name}
    if description is not None:
        spec["description"] = description
    if parameters is not None:
        spec["parameters"] = parameters
    return spec


def json_object(text: str) -> dict[str, Any]:
    """Tool-call arguments from their JSON text; ``ValueError`` says why text is not a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return value


def arguments(text: str, param: str) -> dict[str, Any]:
    """A call's JSON arguments, as a client sent them back in the conversation."""
    try:
        return json_object(text or "{}")
    except ValueError as exc:
        raise InvalidRequest(f"`{param}` {exc}", param=param) from exc


def unsupported_input(param: str) -> InvalidRequest:
    return InvalidRequest("image and file inputs are not supported by this model", param=param)


def join_text(parts: list[str | None], param: str) -> str:
    """A message's text parts as one string; ``None`` stands for a part that is not text (refused)."""
    for j, part in enumerate(parts):
        if part is None:
            raise unsupported_input(f"{param}[{j}]")
    return join_parts([p for p in parts if p is not None])


def join_parts(parts: list[str]) -> str:
    """A message's parts as llama-server joins them: a newline between text parts, none beside a media marker."""
    out, after_media = "", False
    for part in parts:
        media = part == MEDIA_MARKER
        out += ("\n" if out and not media and not after_media else "") + part
        after_media = media
    return out
