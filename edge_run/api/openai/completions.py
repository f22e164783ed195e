"""``POST /v1/completions`` (legacy text completion): the wire request to a :class:`GenRequest`, pieces to JSON or
SSE chunks."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from edge_run.api.http.errors import error_body
from edge_run.api.http.sse import sse
from edge_run.api.openai.chat import stop_list, usage
from edge_run.api.openai.schemas import Completion, CompletionChoice, CompletionLogprobs
from edge_run.errors import InvalidRequest
from edge_run.serving.assembly import collect
from edge_run.serving.request import GenRequest, new_id

if TYPE_CHECKING:
    from edge_run.api.openai.schemas import CompletionRequest
    from edge_run.engine import TokenLogprob as EngineLogprob
    from edge_run.errors import EdgeRunError
    from edge_run.serving.assembly import Piece, Run

__all__ = ["CompletionFrames", "complete", "translate"]


def _prompts(req: CompletionRequest) -> list[str]:
    return [req.prompt] if isinstance(req.prompt, str) else req.prompt


def translate(req: CompletionRequest) -> GenRequest:
    if req.suffix:
        raise InvalidRequest("`suffix` (fill-in-the-middle) is not supported", param="suffix")
    if req.best_of not in (None, req.n):
        raise InvalidRequest("`best_of` other than `n` is not supported", param="best_of")
    if req.echo and req.logprobs is not None:
        raise InvalidRequest("`echo` with `logprobs` (prompt logprobs) is not supported", param="logprobs")
    return GenRequest(
        model=req.model,
        sampling=req,
        prompts=_prompts(req),
        max_tokens=req.max_tokens,
        stops=stop_list(req.stop),
        n=req.n,
        top_logprobs=req.logprobs,
    )


def _logprobs(items: list[EngineLogprob], offset: int) -> CompletionLogprobs:
    tokens, values, tops, offsets = [], [], [], []
    for item in items:
        token = item.token.decode("utf-8", "replace")
        tokens.append(token)
        values.append(item.logprob)
        tops.append({b.decode("utf-8", "replace"): lp for b, lp in item.top})
        offsets.append(offset)
        offset += len(token)
    return CompletionLogprobs(tokens=tokens, token_logprobs=values, top_logprobs=tops, text_offset=offsets)


async def complete(req: CompletionRequest, run: Run) -> Completion:
    prompts = _prompts(req)
    choices: list[CompletionChoice] = []
    for i, choice in enumerate(await collect(run)):
        head = prompts[i // req.n] if req.echo else ""
        choices.append(
            CompletionChoice(
                index=i,
                text=head + choice.text,
                finish_reason=choice.finish_reason or "stop",
                logprobs=_logprobs(choice.logprobs, len(head)) if req.logprobs is not None else None,
            )
        )
    return Completion(
        id=new_id("cmpl-"), created=int(time.time()), model=req.model, choices=choices, usage=usage(run.totals)
    )


class CompletionFrames:
    """The stream's ``text_completion`` frames: the prompt first when echoed, then each step's text."""

    def __init__(self, req: CompletionRequest, run: Run) -> None:
        self.req = req
        self.run = run
        self.id, self.created = new_id("cmpl-"), int(time.time())
        self._prompts = _prompts(req)
        self._echoed: set[int] = set()

    def _frame(self, choice: CompletionChoice | None = None) -> bytes:
        totals = None if choice is not None else usage(self.run.totals)
        choices = [choice] if choice else []
        return sse(Completion(id=self.id, created=self.created, model=self.req.model, choices=choices, usage=totals))

    def head(self) -> bytes:
        return b""

    def pieces(self, ready: list[Piece]) -> bytes:
        req, frames = self.req, []
        for piece in ready:
            if req.echo and piece.choice not in self._echoed:  # the prompt first, in a frame of its own
                self._echoed.add(piece.choice)
                frames.append(self._frame(CompletionChoice(piece.choice, self._prompts[piece.choice // req.n], None)))
            lp = _logprobs(piece.logprobs or [], 0) if req.logprobs is not None else None
            frames.append(self._frame(CompletionChoice(piece.choice, piece.text, piece.finish_reason, lp)))
        return b"".join(frames)

    def tail(self) -> bytes:
        options = self.req.stream_options
        return (self._frame() if options is not None and options.include_usage else b"") + b"data: [DONE]\n\n"

    def failed(self, exc: EdgeRunError) -> bytes:
        return sse(error_body(exc))
