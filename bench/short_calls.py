"""Probe: does a prompt under 64 tokens give the same logits in calls of other widths below 64 rows?

    flock /tmp/edge-run-cpu.lock .venv/bin/python bench/short_calls.py [--model FILE] [--tokens 45]

The engine computes a text prompt under 64 tokens in one call (``slots.cut_of``, ``NARROW``), and a cached one
computes its rows after the shared ones in a call of 8 rows or more (``slots.LEAD``). That rests on ggml-cpu
computing each row of a call below 64 rows alike from 8 rows on: flash attention walks the KV row by row there,
and K-quant products take the tiled kernel from 8 rows, row by row below. This computes ``--tokens`` random tokens
in one call, then in calls of each plan, then one generated row beside a draft (as the engine decodes it), and
prints the time and the largest logit difference against one call (``0`` means bit-identical), for the prompt's
last row and for the generated one.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

from edge_run.engine.llama.context import Batch, Context
from edge_run.engine.llama.model import Model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import cpu_model


def plans(n: int) -> dict[str, list[int]]:
    """Call widths that each sum to ``n``: the first four keep 8 rows a call or more, the rest do not."""
    return {
        f"[{n}]": [n],
        f"[8, {n - 8}]": [8, n - 8],
        f"[{n - 8}, 8]": [n - 8, 8],
        "halves": [n // 2, n - n // 2],
        f"[{n - 7}, 7]": [n - 7, 7],
        f"[{n - 1}, 1]": [n - 1, 1],
        f"{n} x 1": [1] * n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path.home() / ".cache/edge-run-tests/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--tokens", type=int, default=45, help="prompt tokens, 16 to 63")
    args = ap.parse_args()
    n = args.tokens
    model = Model(args.model, gpu_layers=0)
    rng = random.Random(9)
    toks = [rng.randrange(100, 20000) for _ in range(n + 2)]
    ctx = Context(model, n_seq=1, n_ctx_seq=512, n_batch=512, threads=2)
    batch = Batch(512)

    def run(widths: list[int]) -> tuple[float, np.ndarray, np.ndarray]:
        ctx.seq_rm(0, 0, -1)
        start, t = 0, time.perf_counter()
        for w in widths:
            batch.fill(toks[start : start + w], start, 0, last_logits=True)
            ctx.decode(batch)
            start += w
        seconds = time.perf_counter() - t
        last = ctx.logits(batch.n - 1).copy()
        batch.clear()  # a generated row and a draft after it
        batch.add(toks[n], n, 0, True)
        batch.add(toks[n + 1], n + 1, 0, True)
        ctx.decode(batch)
        return seconds, last, ctx.logits(0).copy()

    print(cpu_model())
    print(f"{args.model.name}: {n} tokens in calls of each plan, then a generated row (max |dlogit| vs one call)")
    print(f"{'plan':<12} {'prompt ms':>9} {'last row':>9} {'generated':>9}")
    ref = run([n])
    for name, widths in plans(n).items():
        seconds, last, generated = run(widths)
        d_last, d_gen = (float(np.max(np.abs(a - b))) for a, b in zip((last, generated), ref[1:], strict=True))
        print(f"{name:<12} {seconds * 1000:>9.0f} {d_last:>9.3g} {d_gen:>9.3g}", flush=True)
    batch.close()
    ctx.close()
    model.close()


if __name__ == "__main__":
    main()
