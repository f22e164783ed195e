"""A sampled token as its choice sees it: text (stop strings held back), log-probabilities, a finish reason."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from edge_run.engine.types import Chunk, TokenLogprob

if TYPE_CHECKING:
    from edge_run.engine.llama.context import Context
    from edge_run.engine.llama.model import Model
    from edge_run.engine.slots import Job, Slot

__all__ = ["token_chunk"]


def token_chunk(model: Model, ctx: Context, slot: Slot, job: Job, token: int) -> Chunk:
    """The chunk for ``token``, just sampled for ``slot``'s ``job``.

    It finishes the choice with "stop" at an end-of-generation token or a stop string, with "length" at
    ``max_tokens`` or the end of the slot's context; otherwise the token becomes the slot's ``next_token``.
    """
    text = slot.text
    assert text is not None
    logprobs = None
    if job.top_logprobs is not None:
        row = ctx.logits(slot.logit_index) if slot.replay is None else slot.replay
        lp, top = _logprobs(row, token, job.top_logprobs)
        piece = model.piece(token, special=True)
        logprobs = [TokenLogprob(piece, lp, [(model.piece(t, special=True), v) for t, v in top])]
    finish: str | None = None
    emitted = ""
    if model.is_eog(token):
        finish = "stop"
        logprobs = None
    else:
        slot.generated += 1
        emitted = text.push(model.piece(token))
        if text.stopped:
            finish = "stop"
        elif slot.generated >= job.max_tokens or len(slot.cache) >= ctx.n_ctx_seq:
            finish = "length"
        else:
            slot.next_token = token
    if finish is not None:
        emitted += text.flush()
    return Chunk(
        index=job.index,
        text=emitted,
        completion_tokens=slot.generated,
        finish_reason=finish,
        prompt_tokens=len(job.prompt),
        cached_tokens=slot.cached,
        logprobs=logprobs,
        stop=text.stop,
        drafts_accepted=slot.accepted,
        drafts_rejected=slot.rejected,
    )


def _logprobs(logits: np.ndarray, token: int, top_n: int) -> tuple[float, list[tuple[int, float]]]:
    """Log-probability of ``token`` and the ``top_n`` likeliest tokens, from a row of logits."""
    peak = float(logits.max())
    lse = peak + float(np.log(np.exp(logits - peak).sum()))
    top: list[tuple[int, float]] = []
    if top_n > 0:
        ids = np.argpartition(-logits, top_n)[:top_n]
        ids = ids[np.argsort(-logits[ids])]
        top = [(int(i), float(logits[i]) - lse) for i in ids]
    return float(logits[token]) - lse, top
