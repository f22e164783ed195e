"""Probe: why prompt blocks of 64 rows cost more per row than 512-row calls at long KV, on several threads.

    flock /tmp/edge-run-cpu.lock .venv/bin/python bench/fa_chunks.py [--model FILE] [--kv 2560] [--rounds 5]

ggml-cpu's flash attention (``ops.cpp``, ``ggml_compute_forward_flash_attn_ext_f16``) splits a call's
(row, head) pairs into 4 x threads equal chunks, and each chunk into Q tiles of 64 rows that stop at the
chunk's end and at a head's end. Every tile, full or not, walks the whole KV. One thread takes the call as
one chunk, so its tiles are whole; on more, a chunk boundary that is not a multiple of 64 rows inside a head
adds a partial tile. A call of B rows and H heads on T threads therefore walks the KV ``tiles(B, H, T)``
times where H x ceil(B / 64) would do.

It prefills ``--kv`` tokens, then times the next 512 tokens in calls of B rows (B = 64 ... 512) on 1 and 2
threads, through the engine's llama adapter, and prints each B's time against 512's beside the tile count.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from edge_run.engine.llama.context import Batch, Context
from edge_run.engine.llama.model import Model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import cpu_model

TILE = 64  # ggml-cpu's GGML_FA_TILE_Q
WIDTHS = (64, 128, 192, 256, 512)


def tiles(rows: int, heads: int, threads: int) -> int:
    """The Q tiles ggml-cpu's flash attention computes for one call (one sequence) of ``rows`` rows."""
    total = rows * heads
    chunk = total if threads == 1 else -(-total // (4 * threads))
    count = 0
    for start in range(0, total, chunk):
        r, end = start, min(start + chunk, total)
        while r < end:  # a tile stops at the chunk's end and at the head's end
            r += min(TILE, end - r, rows - r % rows)
            count += 1
    return count


def prefilled(model: Model, kv: int, seed: int) -> tuple[Context, Batch, list[int]]:
    """A 2-thread context of one sequence, ``kv + 1024`` cells, holding ``kv`` random tokens; its batch of 512 rows; and
    ``kv + 512`` tokens, the first ``kv`` of them those in the KV."""
    rng = random.Random(seed)
    toks = [rng.randrange(100, 20000) for _ in range(kv + 512)]
    ctx = Context(model, n_seq=1, n_ctx_seq=kv + 1024, n_batch=512, threads=2)
    batch = Batch(512)
    for s in range(0, kv, 512):
        batch.fill(toks[s : min(s + 512, kv)], s, 0, last_logits=False)
        ctx.decode(batch)
    return ctx, batch, toks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path.home() / ".cache/edge-run-tests/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--kv", type=int, default=2560, help="tokens already in the KV before the timed 512")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    model = Model(args.model, gpu_layers=0)
    heads = int(model.meta(f"{model.meta('general.architecture')}.attention.head_count") or 0)
    ctx, batch, toks = prefilled(model, args.kv, seed=2)
    times: dict[tuple[int, int], list[float]] = {}
    for _ in range(args.rounds):
        for threads in (1, 2):
            ctx.set_threads(threads)
            for rows in WIDTHS:
                ctx.seq_rm(0, args.kv, -1)
                t = time.perf_counter()
                for s in range(args.kv, args.kv + 512, rows):
                    batch.fill(toks[s : s + rows], s, 0, last_logits=False)
                    ctx.decode(batch)
                times.setdefault((threads, rows), []).append(time.perf_counter() - t)
    print(cpu_model())
    print(f"{args.model.name} ({heads} heads): 512 tokens after {args.kv} in calls of B rows, median of {args.rounds}")
    print(f"{'threads':>7} {'B':>4} {'ms':>7} {'÷ B=512':>8} {'Q tiles per 512 rows':>21}")
    for threads in (1, 2):
        base = statistics.median(times[(threads, 512)])
        for rows in WIDTHS:
            ms = statistics.median(times[(threads, rows)])
            n = tiles(rows, heads, threads) * 512 / rows
            print(f"{threads:>7} {rows:>4} {ms * 1000:>7.0f} {ms / base:>7.2f}x {n:>14.0f} (whole: {heads * 8})")
    ctx.close()
    batch.close()
    model.close()


if __name__ == "__main__":
    main()
