"""Probe: does a prompt computed in calls of 64 rows or more, of any widths and starts, give the same logits?

    flock /tmp/edge-run-cpu.lock .venv/bin/python bench/call_widths.py [--model FILE] [--tokens 2048]

The engine cuts a text prompt of 64 tokens or more freely (``slots.cut_of``, ``WIDE``): a cold prompt and a
cached one compute the same rows in calls of other widths and starts. That rests on ggml-cpu computing each row of
a call of 64 rows or more alike (flash attention's tiled kernel walks the KV per row; the matrix products take
a row at a time on x86-64). This prefills ``--tokens`` random tokens in calls of several plans, then a final call
of 100 rows and one generated row, on 2 threads and on 1, and prints the time and the largest logit difference
against the first plan (``0`` means bit-identical). The plans ``8s`` and ``16s`` compute the first 64 rows in
calls of 8 or 16 (below the tile), for contrast.
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


def _odd(n: int) -> list[int]:
    """Widths of 65 to 509 rows at unaligned starts, summing to ``n``."""
    widths, left = [100, 77, 300, 65], n - 542
    while left:
        w = left if left <= 509 else min(509, left - 65)
        widths.append(w)
        left -= w
    return widths


def plans(n: int) -> dict[str, list[int]]:
    """Call widths that each sum to ``n`` (a multiple of 512)."""
    return {
        "64s": [64] * (n // 64),
        "512s": [512] * (n // 512),
        "256s": [256] * (n // 256),
        "odd": _odd(n),
        "8s": [8] * 8 + [64] * (n // 64 - 1),
        "16s": [16] * 4 + [64] * (n // 64 - 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path.home() / ".cache/edge-run-tests/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--tokens", type=int, default=2048, help="prompt tokens before the final call (a multiple of 512)")
    args = ap.parse_args()
    n = args.tokens
    model = Model(args.model, gpu_layers=0)
    rng = random.Random(5)
    toks = [rng.randrange(100, 20000) for _ in range(n + 101)]
    batch = Batch(1024)

    def run(widths: list[int], threads: int) -> tuple[float, np.ndarray, np.ndarray]:
        ctx = Context(model, n_seq=1, n_ctx_seq=n + 256, n_batch=1024, threads=threads)
        start, t = 0, time.perf_counter()
        for w in widths:
            batch.fill(toks[start : start + w], start, 0, last_logits=True)
            ctx.decode(batch)
            start += w
        seconds = time.perf_counter() - t
        batch.fill(toks[n : n + 100], n, 0, last_logits=True)
        ctx.decode(batch)
        final = ctx.logits(99).copy()
        batch.fill([toks[n + 100]], n + 100, 0, last_logits=True)  # a generated row, alone
        ctx.decode(batch)
        lone = ctx.logits(0).copy()
        ctx.close()
        return seconds, final, lone

    print(cpu_model())
    print(f"{args.model.name}: {n} tokens in calls of each plan, then a call of 100 and a lone row")
    print(f"{'threads':>7} {'plan':<6} {'prefill ms':>10} {'final call':>11} {'lone row':>9}   (max |dlogit| vs 64s)")
    base: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for threads in (2, 1):
        for name, widths in plans(n).items():
            assert sum(widths) == n, (name, widths)
            seconds, final, lone = run(widths, threads)
            ref = base.setdefault(threads, (final, lone))
            d_final, d_lone = (float(np.max(np.abs(a - b))) for a, b in zip((final, lone), ref, strict=True))
            print(f"{threads:>7} {name:<6} {seconds * 1000:>10.0f} {d_final:>11.3g} {d_lone:>9.3g}", flush=True)
    f1, f2 = base[1][0], base[2][0]
    print(f"64s, final call, 1 thread vs 2: {float(np.max(np.abs(f1 - f2))):.3g}")
    batch.close()
    model.close()


if __name__ == "__main__":
    main()
