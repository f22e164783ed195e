"""The Responses API's stream, in OpenAI's order.

``response.created``, ``response.in_progress``, then for each output item ``output_item.added``, its
content (``reasoning_text.delta``..., ``reasoning_text.done`` for a thought; ``content_part.added``,
``output_text.delta``..., ``output_text.done``, ``content_part.done``; or ``function_call_arguments.delta``...,
``.done``) and ``output_item.done``; last ``response.completed``
(``response.incomplete`` at ``max_output_tokens``, as OpenAI sends it), or ``response.failed``.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from edge_run.api.http.sse import sse
from edge_run.api.responses.schemas import OutputText, ResponseError
from edge_run.api.responses.translate import Output, finish, response

if TYPE_CHECKING:
    from edge_run.api.responses.translate import ResponseJob, Status
    from edge_run.errors import EdgeRunError
    from edge_run.serving.assembly import BlockEvent, Piece, Run

__all__ = ["ResponseFrames"]


class ResponseFrames:
    """The stream's events, numbered in order, as ``event:``/``data:`` frames."""

    def __init__(self, job: ResponseJob, run: Run) -> None:
        self.job = job
        self.run = run
        self.output = Output()
        self._seq = itertools.count()

    def _frame(self, kind: str, **fields: object) -> bytes:
        return sse({"type": kind, "sequence_number": next(self._seq), **fields}, kind)

    def _lifecycle(self, kind: str, status: Status, error: ResponseError | None = None) -> bytes:
        return self._frame(kind, response=response(self.job, status, self.output, error=error))

    def head(self) -> bytes:
        return self._lifecycle("response.created", "in_progress") + self._lifecycle(
            "response.in_progress", "in_progress"
        )

    def pieces(self, ready: list[Piece]) -> bytes:
        return b"".join(f for piece in ready for e in self.output.choice.push(piece) for f in self._block(e))

    def tail(self) -> bytes:
        final = finish(self.job, self.output, self.run.totals)
        return self._frame(f"response.{final.status}", response=final)

    def failed(self, exc: EdgeRunError) -> bytes:
        code = "rate_limit_exceeded" if exc.status == 429 else "server_error"  # in-band, as OpenAI does
        return self._lifecycle("response.failed", "failed", error=ResponseError(code=code, message=exc.message))

    def _block(self, e: BlockEvent) -> list[bytes]:
        b, out = e.block, self.output
        at = {"item_id": out.id(b), "output_index": b.index}
        text = b.call_id is None
        if b.reasoning:
            return self._thought(e, at)
        if e.kind == "start":
            frames = [self._frame("response.output_item.added", output_index=b.index, item=out.item(b, done=False))]
            if text:
                frames.append(
                    self._frame("response.content_part.added", **at, content_index=0, part=OutputText(text=""))
                )
            return frames
        if e.kind == "delta":
            if text:
                return [self._frame("response.output_text.delta", **at, content_index=0, delta=e.delta, logprobs=[])]
            return [self._frame("response.function_call_arguments.delta", **at, delta=e.delta)]
        if text:
            part = OutputText(text=b.text)
            frames = [
                self._frame("response.output_text.done", **at, content_index=0, text=b.text, logprobs=[]),
                self._frame("response.content_part.done", **at, content_index=0, part=part),
            ]
        else:
            frames = [self._frame("response.function_call_arguments.done", **at, name=b.name, arguments=b.text)]
        return [*frames, self._frame("response.output_item.done", output_index=b.index, item=out.item(b))]

    def _thought(self, e: BlockEvent, at: dict[str, object]) -> list[bytes]:
        """A reasoning item: ``reasoning_text.delta`` s, then ``reasoning_text.done`` with the whole thought."""
        b = e.block
        if e.kind == "start":
            item = self.output.item(b, done=False)
            return [self._frame("response.output_item.added", output_index=b.index, item=item)]
        if e.kind == "delta":
            return [self._frame("response.reasoning_text.delta", **at, content_index=0, delta=e.delta)]
        return [
            self._frame("response.reasoning_text.done", **at, content_index=0, text=b.text),
            self._frame("response.output_item.done", output_index=b.index, item=self.output.item(b)),
        ]
