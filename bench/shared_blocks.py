"""Probe: may equal prompt blocks of several slots share one ``llama_decode`` and keep the same-answer guarantee?

    .venv/bin/python bench/shared_blocks.py [--model FILE] [--rows 64] [--slots 4] [--history 0 8] [--threads 2]

Under the block rule each slot's prompt block is its own ``llama_decode``. Slots keep their own KV streams, and
llama.cpp cuts a batch of several streams into micro-batches of equal rows per sequence, so blocks of equal
rows (every full block) could share a call and keep their row count. For each ``--history`` (blocks already in
each slot's cache before the compared one; slot ``s`` holds ``history + 3 s`` of them, so the slots sit at
different positions) it decodes one block per slot through the engine's llama adapter, each alone, then all in
one call in a fresh context, and prints per slot the largest difference of the block's last-row logits and
whether they are bit for bit the same, and the two ways' times (medians of ``--rounds``). Rows of unequal
counts (``--rows 40 45 50 64``) show what the micro-batch cut does to a block that does not fit it.
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
from edge_run.engine.scheduler import PREFILL_BLOCK as BLOCK  # history blocks are the engine's width

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import cpu_model

CACHE = Path.home() / ".cache" / "edge-run-tests"


def decode(model: Model, prompts: list[list[int]], history: list[int], rows: list[int], threads: int, *,
           together: bool) -> tuple[list[np.ndarray], float]:  # fmt: skip
    """Each slot's history blocks alone, then its compared block alone or all slots' in one call: the last
    rows' logits and the time the compared blocks took."""
    ctx = Context(model, n_seq=len(prompts), n_ctx_seq=4096, n_batch=512, threads=threads)
    batch = Batch(512)
    try:
        for s, prompt in enumerate(prompts):
            for b in range(history[s]):
                batch.fill(prompt[b * BLOCK : (b + 1) * BLOCK], b * BLOCK, s, last_logits=False)
                ctx.decode(batch)
        groups = [list(range(len(prompts)))] if together else [[s] for s in range(len(prompts))]
        last: dict[int, np.ndarray] = {}
        start = time.perf_counter()
        for group in groups:
            batch.clear()
            ends = {}
            for s in group:
                at = history[s] * BLOCK
                for i in range(rows[s]):
                    ends[s] = batch.add(prompts[s][at + i], at + i, s, i == rows[s] - 1)
            ctx.decode(batch)
            last.update({s: ctx.logits(i).copy() for s, i in ends.items()})
        return [last[s] for s in range(len(prompts))], time.perf_counter() - start
    finally:
        batch.close()
        ctx.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=CACHE / "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--rows", type=int, nargs="+", default=[BLOCK], help="rows of each slot's block (one: all)")
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--history", type=int, nargs="+", default=[0, 8])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    slots = len(args.rows) if len(args.rows) > 1 else args.slots
    rows = args.rows if len(args.rows) > 1 else args.rows * slots
    model = Model(args.model, gpu_layers=0)
    print(f"{cpu_model()}\nmodel {args.model.name}, {args.threads} threads, {slots} slots, blocks of {rows} rows\n")
    print(f"{'history':>8} {'alone ms':>9} {'one call ms':>12}  per slot: max |dlogit| / bit for bit")
    rng = random.Random(7)
    for h in args.history:
        history = [h + 3 * s for s in range(slots)]
        prompts = [[rng.randrange(100, 20000) for _ in range(BLOCK * history[s] + rows[s])] for s in range(slots)]
        alone_t, together_t, same = [], [], ""
        for _ in range(args.rounds):
            alone, t1 = decode(model, prompts, history, rows, args.threads, together=False)
            together, t2 = decode(model, prompts, history, rows, args.threads, together=True)
            alone_t.append(t1)
            together_t.append(t2)
            pairs = zip(alone, together, strict=True)
            same = " ".join(f"{np.abs(a - b).max():.2g}/{np.array_equal(a, b)}" for a, b in pairs)
        print(f"{h:>8} {statistics.median(alone_t) * 1000:>9.0f} {statistics.median(together_t) * 1000:>12.0f}  {same}")
    model.close()


if __name__ == "__main__":
    main()
