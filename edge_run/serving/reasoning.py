"""Thinking apart from the answer: the format a chat template announces, the controls a request sends, and
the splitter that routes a model's thought to ``reasoning`` and the rest to ``content``.

Formats (llama.cpp's ``common/chat.cpp`` knows the same ones):

- **tags**: a leading ``<think>…</think>`` (Qwen3, DeepSeek-R1, SmolLM3, GLM...), ``[THINK]…[/THINK]``
  (Magistral), ``<|channel>thought…<channel|>`` (Gemma 4), ``<seed:think>…</seed:think>``. A template may
  open the tag itself at the end of the generation prompt (DeepSeek-R1): the answer then starts inside it.
- **harmony** (gpt-oss): ``<|channel|>analysis<|message|>…<|end|>`` is the thought, ``final`` the answer,
  and ``commentary to=functions.NAME … <|message|>ARGS`` a tool call.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Literal

from edge_run.errors import InvalidRequest
from edge_run.serving.calls.stream import held_back

__all__ = [
    "Harmony",
    "Part",
    "Split",
    "ThinkFormat",
    "Thinking",
    "from_effort",
    "splitter",
    "template_variables",
    "think_format",
]

PartKind = Literal["reasoning", "content", "call", "args"]
Part = tuple[PartKind, str]  # ("call", name) opens a tool call; ("args", text) is a piece of its arguments


@dataclass(frozen=True, slots=True)
class ThinkFormat:
    open: str
    close: str
    harmony: bool = False

    @property
    def closing(self) -> str:
        """What ends a thought cut short by its budget, and opens the answer."""
        if self.harmony:
            return self.close + "<|start|>assistant<|channel|>final<|message|>"
        return f"\n{self.close}\n\n"


# (marker in the template's source, the format); the first that matches wins
_FORMATS = (
    ("<|channel|>", ThinkFormat("<|channel|>analysis<|message|>", "<|end|>", harmony=True)),
    ("<|channel>thought", ThinkFormat("<|channel>thought", "<channel|>")),
    ("[THINK]", ThinkFormat("[THINK]", "[/THINK]")),
    ("<seed:think>", ThinkFormat("<seed:think>", "</seed:think>")),
    ("<think>", ThinkFormat("<think>", "</think>")),
)


def think_format(source: str) -> ThinkFormat | None:
    """The thinking format a chat template's source writes, if any."""
    return next((fmt for marker, fmt in _FORMATS if marker in source), None)


@dataclass(frozen=True, slots=True)
class Thinking:
    """A request's thinking controls, whichever wire field they came in."""

    enabled: bool | None = None  # None: the template's default
    effort: Literal["low", "medium", "high"] | None = None
    budget: int | None = None  # the thought's tokens at most; None: the server's --reasoning-budget


_EFFORTS: dict[str, Thinking] = {
    "none": Thinking(enabled=False, effort="low"),
    "minimal": Thinking(enabled=True, effort="low"),
    "low": Thinking(enabled=True, effort="low"),
    "medium": Thinking(enabled=True, effort="medium"),
    "high": Thinking(enabled=True, effort="high"),
    "xhigh": Thinking(enabled=True, effort="high"),
}


def from_effort(effort: str | None, budget: int | None = None) -> Thinking | None:
    """OpenAI's ``reasoning_effort`` (the wire schema has already checked the value), and a budget."""
    if effort is None:
        return None if budget is None else Thinking(budget=budget)
    return dataclasses.replace(_EFFORTS[effort], budget=budget)


def template_variables(
    thinking: Thinking | None, kwargs: dict[str, Any] | None, declared: frozenset[str]
) -> dict[str, Any]:
    """The names passed to the chat template: the request's ``chat_template_kwargs``, and the thinking controls
    under the names this family's template reads (``enable_thinking``, ``thinking``, ``reasoning_effort``)."""
    out = dict(kwargs or {})
    for key in out:
        if key not in declared:
            known = ", ".join(f"`{k}`" for k in sorted(declared)) or "none"
            message = f"`chat_template_kwargs.{key}` is not read by this model's chat template (it reads: {known})"
            raise InvalidRequest(message, param=f"chat_template_kwargs.{key}")
    if thinking is not None:
        if thinking.enabled is not None:
            for name in ("enable_thinking", "thinking"):
                if name in declared:
                    out.setdefault(name, thinking.enabled)
        if thinking.effort is not None and "reasoning_effort" in declared:
            out.setdefault("reasoning_effort", thinking.effort)
    return out


class Split:
    """A leading thought between two tags, streamed apart from the answer after it."""

    def __init__(self, fmt: ThinkFormat, opened: bool) -> None:
        self._fmt = fmt
        self._state: Literal["lead", "thought", "answer"] = "thought" if opened else "lead"
        self._buf = ""
        self._trim = True  # strip whitespace at the start of the thought and of the answer after it
        self.opened = opened  # a thought has begun
        self.closed = False  # ... and ended

    def push(self, text: str) -> list[Part]:
        self._buf += text
        out: list[Part] = []
        if self._state == "lead":
            lead = self._buf.lstrip()
            if not lead or self._fmt.open.startswith(lead):
                return out  # may still open a thought
            if not lead.startswith(self._fmt.open):
                self._state = "answer"
                self._trim = False
            else:
                self._state, self._buf, self.opened = "thought", lead[len(self._fmt.open) :], True
        if self._state == "thought":
            self._thought(out)
        if self._state == "answer":
            self._answer(out)
        return out

    def _thought(self, out: list[Part]) -> None:
        if self._trim:  # a model may write the tag its prompt already opened: it is not part of the thought
            self._buf = self._buf.lstrip()
            if self._buf and self._fmt.open.startswith(self._buf):
                return
            if self._buf.startswith(self._fmt.open):
                self._buf = self._buf[len(self._fmt.open) :].lstrip()
            self._trim = not self._buf
        cut = self._buf.find(self._fmt.close)
        if cut >= 0:
            thought, self._buf = self._buf[:cut].rstrip(), self._buf[cut + len(self._fmt.close) :]
            self._state, self.closed, self._trim = "answer", True, True
        else:  # hold a tail that may begin the closing tag, and trailing whitespace (the thought is stripped)
            keep = len(self._buf) - held_back(self._buf, (self._fmt.close,))
            thought = self._buf[:keep].rstrip()
            self._buf = self._buf[len(thought) :]
        if thought:
            out.append(("reasoning", thought))

    def _answer(self, out: list[Part]) -> None:
        if self._trim:
            self._buf = self._buf.lstrip()
            self._trim = not self._buf
        if self._buf:
            out.append(("content", self._buf))
            self._buf = ""

    def finish(self) -> list[Part]:
        """What is held, at the end: a thought never closed is all reasoning; a half-open tag is text."""
        rest, self._buf = self._buf, ""
        if self._state == "thought":
            rest = (rest.lstrip() if self._trim else rest).rstrip()
            return [("reasoning", rest)] if rest else []
        return [("content", rest)] if rest and not (self._trim and not rest.strip()) else []


_HEADER = re.compile(r"<\|channel\|>\s*(\w+)|to=\s*([^\s<]+)")
_ENDS = ("<|end|>", "<|call|>", "<|return|>", "<|start|>")


class Harmony:
    """gpt-oss's channels: analysis is the thought, final (or commentary without a recipient) the answer,
    commentary to ``functions.NAME`` a tool call whose message is its JSON arguments."""

    def __init__(self) -> None:
        self._buf = ""
        self._kind: PartKind | None = None  # what the open message is; None: reading a header
        self.opened = False
        self.closed = False

    def push(self, text: str) -> list[Part]:
        self._buf += text
        out: list[Part] = []
        while True:
            if self._kind is None:
                head, sep, rest = self._buf.partition("<|message|>")
                if not sep:
                    return out
                self._buf, self._kind = rest, self._header(head, out)
                continue
            ends = [(i, e) for e in _ENDS if (i := self._buf.find(e)) >= 0]
            if not ends:
                keep = held_back(self._buf, _ENDS)
                self._emit(self._buf[: len(self._buf) - keep], out)
                self._buf = self._buf[len(self._buf) - keep :]
                return out
            cut, end = min(ends)
            self._emit(self._buf[:cut], out)
            self._buf, self._kind = self._buf[cut + (0 if end == "<|start|>" else len(end)) :], None

    def _header(self, head: str, out: list[Part]) -> PartKind:
        channel, recipient = "", ""
        for m in _HEADER.finditer(head):
            channel, recipient = m.group(1) or channel, m.group(2) or recipient
        if recipient.startswith("functions."):
            self.closed = self.closed or self.opened
            out.append(("call", recipient.removeprefix("functions.")))
            return "args"
        if channel == "analysis":
            self.opened = True
            return "reasoning"
        self.closed = self.closed or self.opened
        return "content"

    def _emit(self, text: str, out: list[Part]) -> None:
        if text and self._kind is not None:
            out.append((self._kind, text))

    def finish(self) -> list[Part]:
        """The open message's last text; a header never finished (or no channels at all) is plain answer text."""
        rest, self._buf = self._buf, ""
        if self._kind is None:
            plain = re.sub(r"<\|[a-z]+\|>", "", rest).strip()
            return [("content", plain)] if plain and "<|channel|>" not in rest else []
        return [(self._kind, rest)] if rest else []


def splitter(fmt: ThinkFormat, opened: bool) -> Split | Harmony:
    return Harmony() if fmt.harmony else Split(fmt, opened)
