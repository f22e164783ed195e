"""What the scheduler's rows rest on: a row of a sequence gives the same logits, to the bit, whether it is
decoded alone on one thread, with drafts after it, or beside another sequence's row, on one thread or two.

A lone row on two threads is the exception: from 512 KV cells (llama.cpp pads the KV to 256), flash
attention splits its KV between the threads, and on the CPUs measured its logits moved by up to 0.8
(this project's 2-vCPU AMD EPYC, AVX2; a 2-vCPU Xeon with AVX-512 and AMX). On ggml-cpu's reference kernels
(``Context.decode``) nothing is split, and no K-quant product takes the tiled kernel: the scheduler decodes every
generated row so, on all the threads. Where llama.cpp's CPU backend is out of reach (``Context.reference``), it
never decodes such a lone row on more than one thread (``threads.Steps.lone_row_threads``); a lone row at position 255
or before (256 cells) is not split, and takes all the threads (``Context.splits_lone_row``).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import llama_cpp
import numpy as np
import pytest

from edge_run.engine import Engine, EngineOptions, SamplerSpec
from edge_run.engine.llama import context as llama_context
from edge_run.engine.llama.context import Batch, Context
from edge_run.engine.llama.model import Model
from edge_run.engine.slots import TILE

pytestmark = [pytest.mark.integration, pytest.mark.all_cores]  # rows on one thread and on two

KV = 640  # past 512 cells: where a lone row's KV is split between threads


def test_a_row_computes_the_same_alone_on_one_thread_with_drafts_or_beside_others(model_path: Path) -> None:
    model = Model(model_path, gpu_layers=0)
    ctx = Context(model, n_seq=2, n_ctx_seq=1024, n_batch=512, threads=2)
    batch = Batch(512)
    tokens = model.tokenize("The river runs past the old mill and under the stone bridge. " * 60)[: KV + 2]

    def decode(rows: list[tuple[int, int, int]], threads: int) -> np.ndarray:
        """Decode ``rows`` (token, position, sequence) after both sequences' first KV tokens; the first row's logits."""
        for seq in (0, 1):
            ctx.seq_rm(seq, KV, -1)
        ctx.set_threads(threads)
        batch.clear()
        for token, pos, seq in rows:
            batch.add(token, pos, seq, True)
        ctx.decode(batch)
        return model_logits(ctx, model, 0)

    try:
        for start in range(0, KV, 64):  # the prompt, as the scheduler computes it: blocks of 64
            batch.clear()
            for i, token in enumerate(tokens[start : start + 64]):
                batch.add(token, start + i, 0, False)
            ctx.decode(batch)
        ctx.seq_cp(0, 1)  # the other sequence's KV stream holds the same, as a slot that copies a prefix does
        row = (tokens[KV], KV, 0)
        alone = decode([row], threads=1)
        assert np.array_equal(alone, decode([row, (tokens[KV + 1], KV + 1, 0)], threads=2))  # with a draft
        assert np.array_equal(alone, decode([row, (tokens[5], KV + 1, 0)], threads=1))  # a filler, one thread
        assert np.array_equal(alone, decode([row, (tokens[7], KV, 1)], threads=2))  # beside another sequence
        assert np.array_equal(alone, decode([row, (tokens[7], KV, 1)], threads=1))
    finally:
        batch.close()
        ctx.close()
        model.close()


@pytest.mark.parametrize("name", ["model_path", "k_quant_model_path"])
def test_on_the_reference_kernels_a_row_computes_alike_in_any_call_on_any_thread_count(
    name: str, request: pytest.FixtureRequest
) -> None:
    """Past 512 cells, a lone row on two threads, a row with 7 or 70 drafts after it (ggml-cpu's tiled kernels from 8
    and 64 rows) and a row beside 7 other sequences' give the logits of the lone row on one thread. On the usual
    kernels the lone row on two threads does not (its KV split between the threads)."""
    model = Model(request.getfixturevalue(name), gpu_layers=0)
    ctx = Context(model, n_seq=8, n_ctx_seq=1024, n_batch=512, threads=2)
    batch = Batch(512)
    tokens = model.tokenize("The river runs past the old mill and under the stone bridge. " * 70)[: KV + 71]

    def first_row(seqs: int = 1, drafts: int = 0, threads: int = 2, reference: bool = True) -> np.ndarray:
        for seq in range(8):
            ctx.seq_rm(seq, KV, -1)
        ctx.set_threads(threads)
        batch.clear()
        for seq in range(seqs):
            batch.add(tokens[KV], KV, seq, True)
        for i in range(drafts):
            batch.add(tokens[KV + 1 + i], KV + 1 + i, 0, True)
        ctx.decode(batch, reference=reference)
        return model_logits(ctx, model, 0)

    try:
        assert ctx.reference  # llama.cpp's CPU backend is within reach here (Linux)
        for start in range(0, KV, 64):
            batch.fill(tokens[start : start + 64], start, 0, last_logits=False)
            ctx.decode(batch)
        for seq in range(1, 8):
            ctx.seq_cp(0, seq)
        alone = first_row(threads=1)
        for way in ({}, {"drafts": 7}, {"drafts": 70}, {"seqs": 8}, {"seqs": 8, "threads": 1}):
            assert np.array_equal(alone, first_row(**way)), way  # type: ignore[arg-type]
        assert not np.array_equal(alone, first_row(reference=False))
    finally:
        batch.close()
        ctx.close()
        model.close()


def test_a_lone_row_within_256_cells_computes_the_same_on_two_threads(model_path: Path) -> None:
    """Measured on the AVX2 EPYC: at positions 10 to 255 a lone row's logits on 2 threads equal 1 thread's to the
    bit; at 256 they moved by 0.61, at 300 by 0.85."""
    model = Model(model_path, gpu_layers=0)
    ctx = Context(model, n_seq=1, n_ctx_seq=1024, n_batch=512, threads=2)
    batch = Batch(512)
    tokens = model.tokenize("The river runs past the old mill and under the stone bridge. " * 30)[:257]

    def lone(pos: int, threads: int) -> np.ndarray:
        ctx.seq_rm(0, pos, -1)
        ctx.set_threads(threads)
        batch.clear()
        batch.add(tokens[pos], pos, 0, True)
        ctx.decode(batch)
        return model_logits(ctx, model, 0)

    try:
        for start in range(0, 256, 64):
            batch.clear()
            for i, token in enumerate(tokens[start : start + 64]):
                batch.add(token, start + i, 0, False)
            ctx.decode(batch)
        assert not ctx.splits_lone_row(255) and ctx.splits_lone_row(256)
        for pos in (255, 130, 12):  # from the end back: each drops the positions after it
            assert np.array_equal(lone(pos, 1), lone(pos, 2)), pos
    finally:
        batch.close()
        ctx.close()
        model.close()


def model_logits(ctx: Context, model: Model, index: int) -> np.ndarray:
    ptr = llama_cpp.llama_get_logits_ith(ctx.ptr, index)
    return np.ctypeslib.as_array(ptr, shape=(model.n_vocab,)).copy()


def test_k_quant_rows_compute_alike_in_calls_within_the_models_row_limit(k_quant_model_path: Path, model_path: Path):
    """ggml-cpu's tiled kernel takes K-quant matrix products from 8 rows of a call, with other arithmetic: a row
    computes alike alone, beside 6 other sequences' rows or with 6 drafts (7 rows), but not in a call of 8. The
    scheduler therefore decodes generated rows in calls of ``Model.row_limit`` (7) at most. If the 8-row call ever
    computes alike too, ggml has moved its threshold: move ``TILED_FROM`` with it."""
    if os.environ.get("GGML_CPU_TILED_MM") == "0":
        pytest.skip("GGML_CPU_TILED_MM=0 in this process: ggml's tiled kernel is off")
    smol = Model(model_path, gpu_layers=0)
    assert smol.row_limit is None  # SmolLM2: Q4_1 and Q8_0, which never take the tiled kernel
    smol.close()
    model = Model(k_quant_model_path, gpu_layers=0)
    assert model.row_limit == 7
    ctx = Context(model, n_seq=8, n_ctx_seq=256, n_batch=64, threads=2)
    batch = Batch(64)
    tokens = model.tokenize("The river runs past the old mill and under the stone bridge. " * 12)[:80]

    def first_row(seqs: int, drafts: int = 0) -> np.ndarray:
        """Decode the row at 64 of ``seqs`` sequences and ``drafts`` rows after the first one's; its logits."""
        batch.clear()
        for seq in range(seqs):
            batch.add(tokens[64], 64, seq, True)
        for i in range(drafts):
            batch.add(tokens[65 + i], 65 + i, 0, True)
        ctx.decode(batch)
        for seq in range(seqs):
            ctx.seq_rm(seq, 64, -1)
        return model_logits(ctx, model, 0)

    try:
        for seq in range(8):
            batch.fill(tokens[:64], 0, seq, last_logits=False)
            ctx.decode(batch)
        alone = first_row(1)
        assert np.array_equal(alone, first_row(7))
        assert np.array_equal(alone, first_row(1, drafts=6))
        assert not np.array_equal(alone, first_row(8))
        assert not np.array_equal(alone, first_row(1, drafts=7))
    finally:
        batch.close()
        ctx.close()
        model.close()


@pytest.mark.skipif(TILE != 64, reason="not x86-64: the engine does not rely on it here (slots.TILE)")
@pytest.mark.parametrize("name", ["model_path", "k_quant_model_path"])
def test_prompt_rows_compute_alike_in_any_call_of_64_rows_or_more(name: str, request: pytest.FixtureRequest) -> None:
    """Prompt blocks of 64 rows or more share one ``llama_decode`` (``slots.call_end``): flash attention's tiled
    kernels, from 64 rows of a sequence, compute each row alike whatever the call's width and start, on 1 thread
    or 2. Cold and cached prompts then agree although a cached one starts its call elsewhere. Proven on a 2-vCPU
    Xeon with AVX-512 and AMX (SmolLM2 Q4_1 and Gemma 3 270M Q4_K_M, 2,048 tokens in calls of 64 to 1,000 rows:
    ``bench/call_widths.py``)."""
    model = Model(request.getfixturevalue(name), gpu_layers=0)
    ctx = Context(model, n_seq=1, n_ctx_seq=256, n_batch=256, threads=2)
    batch = Batch(256)
    tokens = model.tokenize("The river runs past the old mill and under the stone bridge. " * 20)[:195]

    def last_row(widths: list[int], threads: int) -> np.ndarray:
        """The first 130 tokens in calls of ``widths`` rows, then a final call of 65; its last row's logits."""
        ctx.seq_rm(0, 0, -1)
        ctx.set_threads(threads)
        start = 0
        for width in [*widths, 65]:
            batch.fill(tokens[start : start + width], start, 0, last_logits=True)
            ctx.decode(batch)
            start += width
        assert start == 195
        return model_logits(ctx, model, 64)

    try:
        two = last_row([65, 65], threads=2)
        assert np.array_equal(two, last_row([130], threads=1))
        assert np.array_equal(two, last_row([64, 66], threads=2))
    finally:
        batch.close()
        ctx.close()
        model.close()


def test_an_answer_on_the_reference_kernels_is_the_answer_without_them(
    tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine whose generated rows take the reference kernels on two threads, and one where llama.cpp's CPU backend
    is out of reach (its lone rows past 256 cells on one thread, or with a filler draft): the same answer and
    log-probabilities, to the bit, with drafts and without."""
    text = "Tell me about the river, the old mill and the stone bridge. " * 24  # past 256 cells

    async def run(draft_max: int) -> tuple[list, bool]:
        options = EngineOptions(ctx=1024, threads=2, gpu_layers=0, slots=1, max_queue=1, batch=512,
                                draft_max=draft_max, kernel_checks=tmp_path / "kernel-checks.json")  # fmt: skip
        engine = Engine("t", model_path, options)
        await engine.load()
        try:
            prompt = await engine.prompt_tokens([{"role": "user", "content": text}])
            assert len(prompt) > 256
            gen = await engine.generate(prompt, SamplerSpec(temperature=0), max_tokens=48, stops=(), top_logprobs=2)
            return [(c.text, c.logprobs) async for c in gen], engine.status()["reference_kernels"]
        finally:
            await engine.close()

    answers = [asyncio.run(run(drafts)) for drafts in (8, 0)]
    monkeypatch.setattr(llama_context, "reference_switch", lambda ptr: None)
    answers += [asyncio.run(run(drafts)) for drafts in (8, 0)]
    assert [reference for _, reference in answers] == [True, True, False, False]
    assert all(chunks == answers[0][0] for chunks, _ in answers)
