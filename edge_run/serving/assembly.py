"""One response assembly for every route: a started generation read back as pieces, blocks and totals.

:meth:`Run.pieces` turns the engine's chunks into :class:`Piece` s, with tool calls already parsed out
of the text. Chat completions frame pieces as they are; responses and messages frame a choice's
output as :class:`Block` s (text, or one tool call each), which :class:`Choice` builds from the same
pieces. A whole answer is the same pieces gathered (:func:`collect`), so streamed and whole answers agree.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from edge_run.serving.calls import ParsedCall, ToolEvent, ToolStream
from edge_run.serving.reasoning import splitter
from edge_run.serving.request import json_object, new_id

if TYPE_CHECKING:
    from edge_run.engine import Chunk, Generation
    from edge_run.engine import TokenLogprob as EngineLogprob
    from edge_run.serving.reasoning import Harmony, Part, Split, ThinkFormat
    from edge_run.serving.tools import CallPlan

__all__ = ["Block", "BlockEvent", "CallPiece", "Choice", "Piece", "Run", "Totals", "call_input", "collect"]


@dataclass(frozen=True, slots=True)
class CallPiece:
    """A fragment of a tool call's arguments; the call's first piece also has its ``id`` and ``name``."""

    index: int  # which call of the choice
    arguments: str
    id: str | None = None
    name: str | None = None


@dataclass(slots=True)
class Piece:
    """What one engine step added to one choice."""

    choice: int
    text: str = ""
    reasoning: str = ""  # the thought before the answer, when the model thinks
    calls: list[CallPiece] = field(default_factory=list)
    logprobs: list[EngineLogprob] | None = None
    finish_reason: str | None = None  # "stop", "length" or "tool_calls": the choice is done
    stop: str | None = None  # the stop string that ended the choice, if one did


@dataclass(frozen=True, slots=True)
class Totals:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    accepted_prediction_tokens: int = 0  # drafted tokens that sampling kept
    rejected_prediction_tokens: int = 0
    reasoning_tokens: int = 0  # completion tokens of the thoughts


@dataclass
class Run:
    """A started request: its generations (one per prompt, each with ``n`` choices), its tool plan, and the
    thinking format its answers are read with (``opened``: the prompt ends inside a thought)."""

    parts: list[tuple[int, Generation]]  # (prompt tokens, generation)
    n: int
    plan: CallPlan | None
    think: ThinkFormat | None = None
    opened: bool = False
    family: str = "generic"  # the tool-call format answers are read in (see .calls)
    schemas: dict[str, Any] = field(default_factory=dict)  # a tool's parameters by its name
    _completion: dict[int, int] = field(default_factory=dict)  # choice -> tokens so far
    _cached: dict[int, int] = field(default_factory=dict)  # part -> prompt tokens reused
    _drafts: dict[int, tuple[int, int]] = field(default_factory=dict)  # choice -> drafts kept, drafts not
    _thought: dict[int, int] = field(default_factory=dict)  # choice -> tokens of its thought

    @property
    def totals(self) -> Totals:
        return Totals(
            prompt_tokens=sum(tokens for tokens, _ in self.parts),
            completion_tokens=sum(self._completion.values()),
            cached_tokens=sum(self._cached.values()),
            accepted_prediction_tokens=sum(kept for kept, _ in self._drafts.values()),
            rejected_prediction_tokens=sum(lost for _, lost in self._drafts.values()),
            reasoning_tokens=sum(self._thought.values()),
        )

    def cancel(self) -> None:
        """Stop every generation (client gone, or done); idempotent."""
        for _, gen in self.parts:
            gen.cancel()

    async def pieces(self) -> AsyncIterator[list[Piece]]:
        """Every piece that is ready, in order; a consumer that fell behind catches up in one batch.

        Choices are numbered across prompts (prompt ``p``'s choice ``i`` is ``p * n + i``). An engine
        failure is raised here, after the pieces before it.
        """
        readers = [_Reader(self) for _ in range(len(self.parts) * self.n)]

        def piece(index: int, chunk: Chunk) -> Piece:
            self._completion[index] = chunk.completion_tokens
            self._drafts[index] = (chunk.drafts_accepted, chunk.drafts_rejected)
            out = Piece(index, logprobs=chunk.logprobs or None, finish_reason=chunk.finish_reason, stop=chunk.stop)
            reader = readers[index]
            thinking = reader.thinking
            reader.read(out, chunk.text, done=chunk.finish_reason is not None)
            if thinking or reader.thinking or out.reasoning:
                self._thought[index] = chunk.completion_tokens
            return out

        try:
            for p, (_, gen) in enumerate(self.parts):
                async for ready in gen.batches():
                    for chunk in ready:
                        if chunk.index == 0:
                            self._cached[p] = chunk.cached_tokens
                    yield [piece(p * self.n + chunk.index, chunk) for chunk in ready]
        finally:
            self.cancel()


class _Reader:
    """One choice's text read apart: its thought (if the model thinks), its answer, its tool calls."""

    def __init__(self, run: Run) -> None:
        self._split: Split | Harmony | None = splitter(run.think, run.opened) if run.think is not None else None
        # harmony's calls come in channels of their own, read by the splitter
        reads_calls = run.plan is not None and run.family != "harmony"
        self._tools = ToolStream(run.family, run.schemas) if reads_calls else None
        self._calls = 0  # calls so far
        self._harmony_call = False  # a call came in harmony's own channel

    @property
    def thinking(self) -> bool:
        """Inside a thought now (counted as reasoning tokens)."""
        return self._split is not None and self._split.opened and not self._split.closed

    def read(self, piece: Piece, text: str, *, done: bool) -> None:
        parts: list[Part] = [("content", text)]
        if self._split is not None:
            parts = self._split.push(text) + (self._split.finish() if done else [])
        events: list[ToolEvent] = []
        for kind, value in parts:
            if kind == "reasoning":
                piece.reasoning += value
            elif kind == "call":
                self._harmony_call = True
                events.append(ToolEvent(call=ParsedCall(id=new_id("call_"), name=value, arguments="")))
            elif kind == "args":
                events.append(ToolEvent(arguments=value))
            elif self._tools is not None:
                events += self._tools.push(value)
            else:
                events.append(ToolEvent(content=value))
        was_call = self._harmony_call
        if done and self._tools is not None:
            more, tool_call = self._tools.finish()
            events += more
            was_call = was_call or tool_call
        self._calls = _add_events(piece, events, self._calls)
        if done and was_call:
            piece.finish_reason = "tool_calls"


def _add_events(piece: Piece, events: list[ToolEvent], calls: int) -> int:
    """Put parsed tool events on ``piece``; returns how many calls the choice has now."""
    for e in events:
        if e.content:
            piece.text += e.content
        if e.call is not None:
            calls += 1
            piece.calls.append(CallPiece(calls - 1, e.call.arguments, id=e.call.id, name=e.call.name))
        if e.arguments:
            piece.calls.append(CallPiece(calls - 1, e.arguments))
    return calls


@dataclass(slots=True)
class Block:
    """One block of a choice's output: text, or one tool call (``call_id`` and ``name`` set)."""

    index: int
    text: str = ""  # the text, the thought, or the call's arguments
    call_id: str | None = None
    name: str | None = None
    reasoning: bool = False  # a thought, not part of the answer

    def as_call(self) -> ParsedCall:
        assert self.call_id is not None and self.name is not None
        return ParsedCall(id=self.call_id, name=self.name, arguments=self.text)


def call_input(arguments: str) -> dict[str, Any]:
    """A generated call's arguments as an object; ``{}`` for a call cut off before its JSON closed."""
    try:
        return json_object(arguments)
    except ValueError:
        return {}


@dataclass(frozen=True, slots=True)
class BlockEvent:
    kind: Literal["start", "delta", "stop"]
    block: Block
    delta: str = ""


@dataclass
class Choice:
    """A choice's output, built from its pieces: blocks in order, and how it finished."""

    blocks: list[Block] = field(default_factory=list)
    finish_reason: str | None = None
    stop: str | None = None  # the stop string that ended it, if one did
    logprobs: list[EngineLogprob] = field(default_factory=list)
    _open: Block | None = None

    @property
    def text(self) -> str:
        return "".join(b.text for b in self.blocks if b.call_id is None and not b.reasoning)

    @property
    def reasoning(self) -> str | None:
        """The thoughts, or None when the model did not think."""
        thoughts = [b.text for b in self.blocks if b.reasoning]
        return "".join(thoughts) if thoughts else None

    @property
    def calls(self) -> list[ParsedCall]:
        return [b.as_call() for b in self.blocks if b.call_id is not None]

    def push(self, piece: Piece) -> list[BlockEvent]:
        """Take a piece; returns the block events it makes (a new block closes the open one)."""
        events: list[BlockEvent] = []
        self.logprobs += piece.logprobs or []
        if piece.reasoning:
            if self._open is None or not self._open.reasoning:
                self._start(Block(len(self.blocks), reasoning=True), events)
            events.append(self._extend(piece.reasoning))
        if piece.text:
            if self._open is None or self._open.call_id is not None or self._open.reasoning:
                self._start(Block(len(self.blocks)), events)
            events.append(self._extend(piece.text))
        for call in piece.calls:
            if call.id is not None:
                self._start(Block(len(self.blocks), call_id=call.id, name=call.name), events)
            if call.arguments:
                events.append(self._extend(call.arguments))
        if piece.finish_reason is not None:
            self.finish_reason, self.stop = piece.finish_reason, piece.stop
            if not self.text and not self.calls:  # an empty answer is still one (empty) text block
                self._start(Block(len(self.blocks)), events)
            self._close(events)
        return events

    def _start(self, block: Block, events: list[BlockEvent]) -> None:
        self._close(events)
        self.blocks.append(block)
        self._open = block
        events.append(BlockEvent("start", block))

    def _extend(self, text: str) -> BlockEvent:
        assert self._open is not None
        self._open.text += text
        return BlockEvent("delta", self._open, text)

    def _close(self, events: list[BlockEvent]) -> None:
        if self._open is not None:
            events.append(BlockEvent("stop", self._open))
            self._open = None


async def collect(run: Run) -> list[Choice]:
    """The whole answer: every choice built from its pieces, as a stream would have sent them."""
    choices = [Choice() for _ in range(len(run.parts) * run.n)]
    try:
        async for ready in run.pieces():
            for piece in ready:
                choices[piece.choice].push(piece)
    finally:
        run.cancel()
    return choices
