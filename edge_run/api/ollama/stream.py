"""Ollama's answers: NDJSON lines (one JSON object a line, the last with ``done: true`` and the figures), or one
object. Both are built by one :class:`Reply` from the same pieces, so a streamed answer and a whole one agree.

Tool calls go out whole (Ollama's ``function.arguments`` is an object), in a line of their own before the last.
Durations are nanoseconds: ``load_duration`` until the model held the request, ``prompt_eval_duration`` until
the first piece, ``eval_duration`` from then to the end.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING

import msgspec

from edge_run.api.http.errors import ollama_error
from edge_run.api.ollama.schemas import ChatResponse, FunctionCall, GenerateResponse, OutMessage, ToolCall
from edge_run.serving.assembly import Choice, call_input

if TYPE_CHECKING:
    from edge_run.errors import EdgeRunError
    from edge_run.serving.assembly import Piece, Run

__all__ = ["NDJSON", "Reply", "created_at", "line", "nanoseconds"]

NDJSON = "application/x-ndjson"

_encode = msgspec.json.Encoder().encode


def line(body: object) -> bytes:
    return _encode(body) + b"\n"


def created_at() -> str:
    """Now, as Ollama writes it (RFC 3339, UTC)."""
    return dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")


def nanoseconds() -> int:
    return time.perf_counter_ns()


class Reply:
    """One answer of ``/api/chat`` (``chat``) or ``/api/generate``, timed from ``started`` (ns) and ``held`` (the
    model took the request)."""

    def __init__(self, model: str, run: Run, *, chat: bool, started: int, held: int) -> None:
        self.model, self.run, self.chat = model, run, chat
        self.started, self.held = started, held
        self.first: int | None = None
        self.choice = Choice()

    def _object(self, text: str, thought: str, calls: list[ToolCall] | None = None) -> ChatResponse | GenerateResponse:
        now = created_at()
        if self.chat:
            message = OutMessage(role="assistant", content=text, thinking=thought or None, tool_calls=calls or None)
            return ChatResponse(model=self.model, created_at=now, done=False, message=message)
        return GenerateResponse(model=self.model, created_at=now, done=False, response=text, thinking=thought or None)

    def _take(self, ready: list[Piece]) -> tuple[str, str]:
        if self.first is None:
            self.first = nanoseconds()
        for piece in ready:
            self.choice.push(piece)
        return "".join(p.text for p in ready), "".join(p.reasoning for p in ready)

    def _calls(self) -> list[ToolCall]:
        return [
            ToolCall(function=FunctionCall(name=c.name, arguments=call_input(c.arguments), index=i), id=c.id)
            for i, c in enumerate(self.choice.calls)
        ]

    def _done(self, body: ChatResponse | GenerateResponse) -> ChatResponse | GenerateResponse:
        end = nanoseconds()
        first = self.first or end
        totals = self.run.totals
        body.done = True
        body.done_reason = "length" if self.choice.finish_reason == "length" else "stop"
        body.total_duration = end - self.started
        body.load_duration = self.held - self.started
        body.prompt_eval_count = totals.prompt_tokens
        body.prompt_eval_duration = max(first - self.held, 0)
        body.eval_count = totals.completion_tokens
        body.eval_duration = end - first
        return body

    # the stream (:class:`edge_run.api.http.sse.Frames`)

    def head(self) -> bytes:
        return b""

    def pieces(self, ready: list[Piece]) -> bytes:
        text, thought = self._take(ready)
        return line(self._object(text, thought)) if text or thought else b""

    def tail(self) -> bytes:
        calls = self._calls()
        return (line(self._object("", "", calls)) if calls else b"") + line(self._done(self._object("", "")))

    def failed(self, exc: EdgeRunError) -> bytes:
        return line(ollama_error(exc))  # in-band, as Ollama does

    # the whole answer

    async def whole(self) -> ChatResponse | GenerateResponse:
        try:
            async for ready in self.run.pieces():
                self._take(ready)
        finally:
            self.run.cancel()
        choice = self.choice
        return self._done(self._object(choice.text, choice.reasoning or "", self._calls()))
