"""Probe: flash attention on (as the engine runs the CPU) or off. Speed of prompt blocks and decode steps, and which
rows compute the same, through the engine's llama adapter (its context made with flash attention off for "off").

    flock /tmp/edge-run-cpu.lock .venv/bin/python bench/flash_attention.py [--model FILE] [--rounds 3]
        [--sizes 700 3000 8000] [--threads 2]

Speed, medians of ``--rounds`` rounds alternating which setting goes first:
- ``prefill N``: a cold prompt of N tokens in the engine's blocks of 64;
- ``c1@P``: one sequence's lone row at position P. With flash attention on, a lone row from 256 runs on one
  thread, as the engine does (``Context.splits_lone_row``: its KV is split between threads otherwise); off, and
  below 256, on ``--threads``;
- ``c4@100``, ``c4@300``, ``c4 one@3000``, ``c8 mixed``: one row for each of 4 or 8 sequences (cached 100 or 300
  tokens, one of them 3,000; eight of 3,000, 1,000 and 300), in one call; ``by length``: in calls of sequences of
  similar lengths (3,000 alone, 1,000 alone), which flash attention off would need: it computes every row of a
  call over as many KV cells as the longest sequence holds.

Rows (off only, where the engine runs): the largest difference of logits between a lone row on one thread and
the same row on ``--threads``, beside other sequences' rows, and with 1 to 15 drafts after it (each row of the
draft step against the row decoded alone: drafting computes otherwise).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import llama_cpp as L
import numpy as np

from edge_run.engine.llama.context import Batch, Context
from edge_run.engine.llama.model import Model
from edge_run.engine.scheduler import PREFILL_BLOCK as BLOCK

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import cpu_model

CACHE = Path.home() / ".cache" / "edge-run-tests"
# the cached tokens of each sequence in the step scenarios
LENS = [3000, 300, 300, 300, 1000, 300, 300, 300, 100, 100, 100, 100]
# each step's calls: the sequences that decode a row each in one call
STEPS = {"c1@100": [[8]], "c1@300": [[1]], "c1@1000": [[4]], "c1@3000": [[0]], "c4@100": [[8, 9, 10, 11]],
         "c4@300": [[1, 2, 3, 5]], "c4 one@3000": [[0, 1, 2, 3]], "  by length": [[0], [1, 2, 3]],
         "c8 mixed": [list(range(8))], "  by length ": [[0], [4], [1, 2, 3, 5, 6, 7]]}  # fmt: skip


def context(model: Model, fa: bool, **kwargs: int) -> Context:
    """The engine's context; with flash attention off if not ``fa``."""
    if fa:
        return Context(model, **kwargs)
    default = L.llama_context_default_params

    def params() -> L.llama_context_params:
        p = default()
        p.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        return p

    L.llama_context_default_params = params
    try:
        return Context(model, **kwargs)
    finally:
        L.llama_context_default_params = default


def prefill(ctx: Context, batch: Batch, tokens: list[int], seq: int) -> None:
    for start in range(0, len(tokens), BLOCK):
        batch.fill(tokens[start : start + BLOCK], start, seq, last_logits=False)
        ctx.decode(batch)


def speed(model: Model, tokens: list[int], fa: bool, sizes: list[int], threads: int, res: dict) -> None:
    batch = Batch(512)
    for n in sizes:
        ctx = context(model, fa, n_seq=1, n_ctx_seq=max(sizes) + 256, n_batch=512, threads=threads)
        start = time.perf_counter()
        prefill(ctx, batch, tokens[:n], 0)
        res.setdefault((fa, f"prefill {n}"), []).append(time.perf_counter() - start)
        ctx.close()
    ctx = context(model, fa, n_seq=len(LENS), n_ctx_seq=4096, n_batch=512, threads=threads)
    for seq, n in enumerate(LENS):
        prefill(ctx, batch, tokens[:n], seq)
    for name, calls in STEPS.items():
        times = []
        for k in range(16):
            start = time.perf_counter()
            for seqs in calls:
                batch.clear()
                for seq in seqs:
                    batch.add(tokens[LENS[seq] + k], LENS[seq] + k, seq, True)
                lone = fa and len(seqs) == 1 and ctx.splits_lone_row(LENS[seqs[0]] + k)
                ctx.set_threads(1 if lone else threads)  # as the engine runs a lone row
                ctx.decode(batch)
            times.append(time.perf_counter() - start)
        for seq in {seq for seqs in calls for seq in seqs}:
            ctx.seq_rm(seq, LENS[seq], -1)
        res.setdefault((fa, name), []).append(statistics.median(times))
    ctx.close()
    batch.close()


def rows(model: Model, tokens: list[int], threads: int) -> list[tuple[str, float]]:
    """Flash attention off: the largest logit difference of each way of decoding a row against it alone."""
    ctx = context(model, False, n_seq=2, n_ctx_seq=4096, n_batch=512, threads=threads)
    batch = Batch(512)
    cached = (2000, 300)  # each sequence's tokens before the compared rows
    for seq, n in enumerate(cached):
        prefill(ctx, batch, tokens[:n], seq)

    def decode(rows: list[tuple[int, int]], n: int) -> list[np.ndarray]:
        """``rows`` (sequence, rows from its end) on ``n`` threads; each row's logits, then dropped."""
        ctx.set_threads(n)
        batch.clear()
        for seq, count in rows:
            for i in range(count):
                batch.add(tokens[cached[seq] + i], cached[seq] + i, seq, True)
        ctx.decode(batch)
        out = [ctx.logits(i).copy() for i in range(batch.n)]
        for seq, n in enumerate(cached):
            ctx.seq_rm(seq, n, -1)
        return out

    def alone(count: int) -> list[np.ndarray]:
        out = []
        for i in range(count):  # each row alone on one thread, after the ones before it
            batch.clear()
            batch.add(tokens[cached[0] + i], cached[0] + i, 0, True)
            ctx.set_threads(1)
            ctx.decode(batch)
            out.append(ctx.logits(0).copy())
        ctx.seq_rm(0, cached[0], -1)
        return out

    ref = alone(16)
    lone, beside = decode([(0, 1)], threads)[0], decode([(0, 1), (1, 1)], threads)[0]
    found = [(f"alone on {threads} threads", np.abs(lone - ref[0]).max()),
             ("beside another sequence's row", np.abs(beside - ref[0]).max())]  # fmt: skip
    for k in (1, 3, 15):
        got = decode([(0, k + 1)], threads)
        diff = max(np.abs(a - b).max() for a, b in zip(got, ref[: k + 1], strict=True))
        found.append((f"with {k} drafts, every row", diff))
    batch.close()
    ctx.close()
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[700, 3000, 8000])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    model = Model(args.model, gpu_layers=0)
    rng = random.Random(2)
    tokens = [rng.randrange(100, min(model.n_vocab, 20000)) for _ in range(max([*args.sizes, 3100]) + 16)]
    res: dict[tuple[bool, str], list[float]] = {}
    for r in range(args.rounds):
        for fa in (True, False) if r % 2 == 0 else (False, True):
            speed(model, tokens, fa, args.sizes, args.threads, res)
    print(f"{cpu_model()}\nmodel {args.model.name}, {args.threads} threads, medians of {args.rounds} rounds\n")
    print(f"{'':16s} {'flash attn on':>14s} {'off':>10s} {'on ÷ off':>9s}")
    for name in [f"prefill {n}" for n in args.sizes] + list(STEPS):
        on, off = statistics.median(res[(True, name)]), statistics.median(res[(False, name)])
        print(f"{name:16s} {on * 1000:11.1f} ms {off * 1000:7.1f} ms {on / off:8.2f}x")
    print("\nflash attention off, a row's logits against the row alone on one thread (largest difference)")
    for label, diff in rows(model, tokens, args.threads):
        print(f"  {label:34s} {diff:.3g}")
    model.close()


if __name__ == "__main__":
    main()
