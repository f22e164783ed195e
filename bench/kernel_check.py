"""The kernel check a model's first load runs (``engine/llama/kernels.py``): its verdict and its time, by model.

    flock /tmp/edge-run-cpu.lock .venv/bin/python bench/kernel_check.py MODEL.gguf [MODEL.gguf ...] [--threads 2]

For each model it prints the properties that fail on this CPU (``wide``, ``narrow``, ``rows``, ``lone``,
``threads``; none is the usual verdict) and how long the check took, at the given thread count and on one thread.
Where a generated row fails (``rows`` or ``lone``), it prints how far its logits alone are from its logits with a
draft and beside another sequence's row.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from edge_run.engine.llama import kernels
from edge_run.engine.llama.model import Model
from edge_run.engine.slots import TILE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import cpu_model


def row_gap(model: Model, threads: int) -> str:
    """The largest logit gap between a generated row alone and with a draft, and beside another sequence's row."""
    probe = kernels.Probe(model, threads)
    try:
        probe.prompt([kernels.AT], threads, seq=1)
        probe.prompt([kernels.AT], threads)
        alone = probe.row(0, False, threads)
        draft, beside = probe.row(1, False, threads), probe.row(0, True, threads)
        return f"with a draft {np.abs(alone - draft).max():.2e}, beside {np.abs(alone - beside).max():.2e}"
    finally:
        probe.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", type=Path, nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(f"{cpu_model()}; prompts cut freely: {TILE == 64}\n")
    print(f"{'model':36} {'threads':>7} {'failed':24} {'seconds':>7}")
    for path in args.models:
        model = Model(path, gpu_layers=0)
        try:
            for threads in sorted({args.threads, 1}, reverse=True):
                start = time.perf_counter()
                failed = kernels.check(model, threads=threads, row_limit=model.row_limit, free_cuts=TILE == 64)
                seconds = time.perf_counter() - start
                print(f"{path.name[:36]:36} {threads:>7} {', '.join(failed) or 'none':24} {seconds:>7.2f}")
            if {"rows", "lone"} & set(failed):
                print(f"  a generated row's logits, against alone: {row_gap(model, args.threads)}")
        finally:
            model.close()


if __name__ == "__main__":
    main()
