"""The thread governor changes llama.cpp's thread count between steps (``Context.set_threads``). That
must never change an answer: the same greedy tokens, and each step's log-probabilities the same to the
bit, whatever thread count computed each step."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_run.engine import SamplerSpec
from edge_run.engine.llama.context import Batch, Context
from edge_run.engine.llama.model import Model
from edge_run.engine.llama.sampler import Sampler

pytestmark = pytest.mark.integration


def run(model: Model, ctx: Context, batch: Batch, threads_at: list[int]) -> tuple[list[int], list[float]]:
    ctx.seq_rm(0, 0, -1)
    sampler = Sampler(model, SamplerSpec(temperature=0))
    tokens = model.tokenize("<|im_start|>user\nTell me about rivers.<|im_end|>\n<|im_start|>assistant\n")
    batch.clear()
    for i, t in enumerate(tokens):
        idx = batch.add(t, i, 0, i == len(tokens) - 1)
    ctx.set_threads(threads_at[0])
    ctx.decode(batch)
    out: list[int] = []
    logprobs: list[float] = []
    for step, pos in enumerate(range(len(tokens), len(tokens) + len(threads_at) - 1)):
        token = sampler.sample(ctx, idx)
        logprobs.append(ctx.logprobs(idx, token, 0)[0])
        out.append(token)
        batch.clear()
        idx = batch.add(token, pos, 0, True)
        ctx.set_threads(threads_at[step + 1])
        ctx.decode(batch)
    sampler.close()
    return out, logprobs


def test_switching_threads_between_steps_changes_nothing(model_path: Path):
    model = Model(model_path, gpu_layers=0)
    ctx = Context(model, n_seq=1, n_ctx_seq=512, n_batch=512, threads=2)
    batch = Batch(512)
    try:
        steady = run(model, ctx, batch, [2] * 40)
        switching = run(model, ctx, batch, [1, 2] * 20)
        assert switching == steady
    finally:
        batch.close()
        ctx.close()
        model.close()
