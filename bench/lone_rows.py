"""Probe: what one generated row costs alone on one thread, alone on two (split KV: answers would depend on the
thread count), alone on two on ggml-cpu's reference kernels (no split: edge-run's way), and with one filler row
beside it on two threads (no split; edge-run's way past 256 cells where the reference kernels are out of reach).

    flock /tmp/edge-run-cpu.lock .venv/bin/python bench/lone_rows.py [--model FILE] [--kv 1000] [--steps 64]
        [--rows 1 2 5 9 17 63 64] [--span 100]

Prefills ``--kv`` tokens through the engine's llama adapter, then times ``--steps`` steps at the next position
(each step's rows removed again) in each way, alternating, and prints the median step beside the lone row on
one thread. A filler row costs what a draft that fails costs. ``--rows`` adds steps of that many rows of the
sequence on 2 threads (a token and its drafts): below 64 rows flash attention walks the KV row by row, from 64
it takes its tiled kernel. ``--span`` adds a prompt's span of that many rows (only the last row's logits) on
the usual kernels and on the reference kernels: what a cold prompt would pay to compute an earlier answer as its
generated rows were computed, so that the next turn could reuse them (bench/README.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from edge_run.engine.llama.model import Model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fa_chunks import prefilled
from peers import cpu_model

WAYS = (  # (name, rows, threads, reference kernels, every row's logits)
    ("lone row, 1 thread", 1, 1, False, True),
    ("lone row, 2 threads", 1, 2, False, True),
    ("lone row, 2, reference", 1, 2, True, True),
    ("row + filler, 2 threads", 2, 2, False, True),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path.home() / ".cache/edge-run-tests/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--kv", type=int, default=1000, help="tokens in the KV before the timed steps")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--rows", type=int, nargs="*", default=[], help="also steps of this many rows on 2 threads")
    ap.add_argument("--span", type=int, nargs="*", default=[], help="also prompt spans of this many rows, both kernels")
    args = ap.parse_args()
    ways = [*WAYS, *((f"{n} rows, 2 threads", n, 2, False, True) for n in args.rows)]
    for n in args.span:
        ways += [(f"span of {n}, 2 threads", n, 2, False, False), (f"span of {n}, 2, reference", n, 2, True, False)]
    model = Model(args.model, gpu_layers=0)
    ctx, batch, toks = prefilled(model, args.kv, seed=3)
    times: dict[str, list[float]] = {name: [] for name, *_ in ways}
    for _ in range(args.steps):
        for name, rows, threads, reference, every in ways:
            ctx.set_threads(threads)
            batch.clear()
            for i in range(rows):
                batch.add(toks[args.kv + i], args.kv + i, 0, every or i == rows - 1)
            start = time.perf_counter()
            ctx.decode(batch, reference=reference)
            times[name].append(time.perf_counter() - start)
            ctx.seq_rm(0, args.kv, -1)
    print(cpu_model())
    print(f"{args.model.name}: one step at {args.kv} KV tokens, median of {args.steps}")
    base = statistics.median(times[WAYS[0][0]])
    for name, rows, *_ in ways:
        ms = statistics.median(times[name]) * 1000
        print(f"{name:26s} {ms:7.2f} ms  {base * 1000 / ms:5.2f}x  {ms / rows:6.2f} ms a row")


if __name__ == "__main__":
    main()
