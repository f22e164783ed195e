"""Probe: what a generated row costs, and which arithmetic it takes, in calls of 2 to 63 rows of a K-quant model.

    flock /tmp/edge-run-cpu.lock .venv/bin/python bench/kquant_rows.py [--model FILE] [--kv 800] [--steps 8]

ggml-cpu takes K-quant products with its tiled kernel from 8 rows of a call, with other arithmetic than row by row
below (``Model.row_limit``): so edge-run decodes 8 streams of such a model in two calls of 4. The other way would
be every generated row in a call of 8 rows or more, a lone stream's with filler rows in idle slots' sequences (short
KVs, cheap attention). This decodes one row of sequence 0 (at ``--kv`` tokens) with drafts after it or with rows of
other sequences (20 tokens each), every row with logits as in a step, and prints the median time and the largest
logit difference of sequence 0's row against it with one draft (2 rows) and against 8 sequences' rows.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from edge_run.engine.llama.context import Batch, Context
from edge_run.engine.llama.model import Model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import cpu_model

SEQS = 8
WAYS = {  # (drafts after the row in sequence 0, rows of other sequences)
    "row + 1 draft": (1, 0),
    "row + 3 drafts": (3, 0),
    "4 sequences": (0, 3),
    "7 sequences": (0, 6),
    "8 sequences": (0, 7),
    "row + 7 drafts": (7, 0),
    "16: 2 a sequence": (1, 14),
    "32: 4 a sequence": (3, 28),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path.home() / ".cache/edge-run-tests/gemma-3-270m-q4_k_m.gguf")
    ap.add_argument("--kv", type=int, default=800)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    model = Model(args.model, gpu_layers=0)
    rng = random.Random(5)
    toks = [rng.randrange(100, 20000) for _ in range(args.kv + 600)]
    ctx = Context(model, n_seq=SEQS, n_ctx_seq=args.kv + 700, n_batch=512, threads=2)
    batch = Batch(512)
    for s in range(0, args.kv, 512):
        batch.fill(toks[s : min(s + 512, args.kv)], s, 0, last_logits=False)
        ctx.decode(batch)
    for seq in range(1, SEQS):
        batch.fill(toks[:20], 0, seq, last_logits=False)
        ctx.decode(batch)

    def step(drafts: int, others: int) -> tuple[float, np.ndarray]:
        batch.clear()
        for i in range(1 + drafts):
            batch.add(toks[args.kv + i], args.kv + i, 0, True)
        for i in range(others):  # one row a sequence, then a second (llama.cpp splits a batch of unequal sequences)
            batch.add(toks[30 + i], 20 + i // (SEQS - 1), 1 + i % (SEQS - 1), True)
        start = time.perf_counter()
        ctx.decode(batch)
        seconds = time.perf_counter() - start
        logits = ctx.logits(0).copy()
        for seq in range(SEQS):
            ctx.seq_rm(seq, args.kv if seq == 0 else 20, -1)
        return seconds, logits

    times: dict[str, list[float]] = {name: [] for name in WAYS}
    logits: dict[str, np.ndarray] = {}
    for _ in range(args.steps):
        for name, (drafts, others) in WAYS.items():
            seconds, logits[name] = step(drafts, others)
            times[name].append(seconds)
    print(cpu_model())
    print(f"{args.model.name}: a generated row at {args.kv} KV tokens, 2 threads, median of {args.steps}")
    print(f"{'call':<20} {'ms':>7} {'vs 2 rows':>9} {'vs 8 seqs':>9}   (max |dlogit|)")
    two, eight = logits["row + 1 draft"], logits["8 sequences"]
    for name in WAYS:
        d2, d8 = (float(np.max(np.abs(logits[name] - ref))) for ref in (two, eight))
        print(f"{name:<20} {statistics.median(times[name]) * 1000:>7.1f} {d2:>9.3g} {d8:>9.3g}")
    batch.close()
    ctx.close()
    model.close()


if __name__ == "__main__":
    main()
