"""The Messages API's stream, in Anthropic's order.

``message_start``, ``ping``, then for each content block ``content_block_start``, its
``content_block_delta`` s (``thinking_delta``, ``text_delta`` or ``input_json_delta``) and ``content_block_stop``; last
``message_delta`` (``stop_reason`` and usage) and ``message_stop``. A failure mid-stream is an ``error`` event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_run.api.anthropic.schemas import MessageObject, MessageUsage, TextBlock, ThinkingBlock, ToolUseBlock
from edge_run.api.anthropic.translate import stop_reason, tool_id, usage
from edge_run.api.http.errors import anthropic_error
from edge_run.api.http.sse import sse
from edge_run.serving.assembly import Choice
from edge_run.serving.request import new_id

if TYPE_CHECKING:
    from edge_run.api.anthropic.schemas import MessagesRequest
    from edge_run.errors import EdgeRunError
    from edge_run.serving.assembly import BlockEvent, Piece, Run

__all__ = ["MessageFrames"]


def _block_frame(e: BlockEvent) -> bytes:
    b = e.block
    if e.kind == "start":
        start: ThinkingBlock | TextBlock | ToolUseBlock = ThinkingBlock("") if b.reasoning else TextBlock("")
        if b.call_id is not None:
            start = ToolUseBlock(tool_id(b.call_id), b.name or "", {})
        body: dict[str, object] = {"type": "content_block_start", "index": b.index, "content_block": start}
    elif e.kind == "delta":
        delta = {"type": "text_delta", "text": e.delta}
        if b.reasoning:
            delta = {"type": "thinking_delta", "thinking": e.delta}
        elif b.call_id is not None:
            delta = {"type": "input_json_delta", "partial_json": e.delta}
        body = {"type": "content_block_delta", "index": b.index, "delta": delta}
    else:
        body = {"type": "content_block_stop", "index": b.index}
    return sse(body, str(body["type"]))


class MessageFrames:
    """The message's events."""

    def __init__(self, req: MessagesRequest, run: Run) -> None:
        self.req = req
        self.run = run
        self.choice = Choice()

    def head(self) -> bytes:
        head = MessageObject(
            id=new_id("msg_"),
            model=self.req.model,
            content=[],
            stop_reason=None,
            stop_sequence=None,
            usage=MessageUsage(input_tokens=self.run.totals.prompt_tokens, output_tokens=0),
        )
        return sse({"type": "message_start", "message": head}, "message_start") + sse({"type": "ping"}, "ping")

    def pieces(self, ready: list[Piece]) -> bytes:
        return b"".join(_block_frame(e) for piece in ready for e in self.choice.push(piece))

    def tail(self) -> bytes:
        reason, sequence = stop_reason(self.choice)
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        # usage here is cumulative: it replaces message_start's, now that the cached prompt tokens are known
        end = {"type": "message_delta", "delta": delta, "usage": usage(self.run.totals)}
        return sse(end, "message_delta") + sse({"type": "message_stop"}, "message_stop")

    def failed(self, exc: EdgeRunError) -> bytes:
        return sse(anthropic_error(exc.status, exc.message), "error")  # in-band, as Anthropic does
