"""Probe: the time to first token of a request that comes while the idle refresh computes a finished answer.

    flock /tmp/edge-run-cpu.lock .venv/bin/python bench/refresh_stop.py [--model FILE] [--rounds 4] [--after 0.6]

Through the engine (no HTTP), each round generates a 200-token answer, waits ``--after`` seconds (the refresh
starts ``REFRESH_AFTER`` after the answer), then asks a short question of another conversation, and prints when
the refresh's call under way ended and the question's time to first token. A request stops the call (its rows are
computed again later), but for the answer's next turn, which reuses them. For the commit before, run it from that
tree: ``PYTHONPATH=OLD_TREE``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from edge_run.engine import Engine, EngineOptions, SamplerSpec
from edge_run.engine import scheduler as scheduler_mod

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import cpu_model

NO_EOS = ((0, -100.0), (2, -100.0), (4, -100.0))  # SmolLM2's end tokens: the answer runs its 200 tokens


async def run(args: argparse.Namespace) -> None:
    ended: list[float] = []
    refresh = scheduler_mod.Scheduler._refresh

    def traced(self: scheduler_mod.Scheduler) -> None:
        refresh(self)
        ended.append(time.monotonic())

    scheduler_mod.Scheduler._refresh = traced  # type: ignore[method-assign]
    options = EngineOptions(ctx=4096, threads=2, gpu_layers=0, slots=2, max_queue=4, batch=512)
    engine = Engine("probe", args.model, options)
    await engine.load()
    ttfts = []
    try:
        for r in range(args.rounds):
            long = [{"role": "user", "content": f"Round {r}. Write a long story about a river and a mill. " * 20}]
            gen = await engine.generate(
                await engine.prompt_tokens(long),
                SamplerSpec(temperature=0, logit_bias=NO_EOS),
                max_tokens=200,
                stops=(),
            )
            async for _ in gen:
                pass
            answered = time.monotonic()
            await asyncio.sleep(args.after)
            sent = time.monotonic()
            short = [{"role": "user", "content": f"Question {r}: what is a lake?"}]
            gen = await engine.generate(
                await engine.prompt_tokens(short), SamplerSpec(temperature=0), max_tokens=4, stops=()
            )
            first = 0.0
            async for _ in gen:
                first = first or time.monotonic()
            call = next((t for t in ended if t > answered), float("nan"))
            ttfts.append(first - sent)
            print(
                f"round {r}: sent {sent - answered:.3f} s after the answer, the refresh call under way ended at "
                f"{call - answered:.3f} s, first token {1000 * (first - sent):.0f} ms after sending",
                flush=True,
            )
    finally:
        await engine.close()
    print(f"median time to first token: {1000 * statistics.median(ttfts):.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path.home() / ".cache/edge-run-tests/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--after", type=float, default=0.6, help="seconds from the answer to the question")
    args = ap.parse_args()
    print(cpu_model())
    print(f"{args.model.name}, 2 threads, REFRESH_AFTER {scheduler_mod.REFRESH_AFTER} s")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
