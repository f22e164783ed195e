"""Probe: where a single stream's time goes when a CPU-bound process starts beside it (the thread governor).

    flock /tmp/edge-run-cpu.lock .venv/bin/python bench/collapse.py [--model FILE] [--rounds 4] [--threads 2]

Through the engine (no HTTP), each round streams 128 tokens on a quiet machine, then starts a busy process, waits
0.5 s and streams 128 more, then stops it and waits 9 s (as ``bench.py --scenario contention`` does). It prints each
run's tokens/s and its steps by thread count: their number, total and slowest time, and the steps stopped at their
deadline and done again on one thread (``threads.Steps``). Run it with ``--threads 1`` for the baseline, and from
an older tree (``PYTHONPATH=OLD_TREE``, where the scheduler ran each call itself) for the commit before.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

from edge_run.engine import Engine, EngineOptions, SamplerSpec
from edge_run.engine import scheduler as scheduler_mod
from edge_run.engine import threads as threads_mod

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import cpu_model

NO_EOS = ((0, -100.0), (2, -100.0), (4, -100.0))  # SmolLM2's end tokens: the answer runs its 128 tokens


def trace(steps: list[tuple[float, int, bool]]) -> None:
    """Record each call: (seconds, threads, stopped at its deadline)."""
    if hasattr(threads_mod, "Steps"):
        run = threads_mod.Steps._run

        def traced(self, batch, *args, **kwargs):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            done, late = run(self, batch, *args, **kwargs)
            steps.append((time.perf_counter() - start, self.threads_now, late))
            return done, late

        threads_mod.Steps._run = traced  # type: ignore[method-assign]
        return
    decode = scheduler_mod.Scheduler._decode  # type: ignore[attr-defined]  # an older tree

    def traced_old(self, batch, **kwargs):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        done = decode(self, batch, **kwargs)
        steps.append((time.perf_counter() - start, self.threads_now, False))
        return done

    scheduler_mod.Scheduler._decode = traced_old  # type: ignore[attr-defined]


async def stream(engine: Engine, r: int) -> float:
    """Tokens/s of one 128-token answer, from its first token."""
    messages = [{"role": "user", "content": f"Round {r}. Tell me about rivers."}]
    spec = SamplerSpec(temperature=0, logit_bias=NO_EOS)
    gen = await engine.generate(await engine.prompt_tokens(messages), spec, max_tokens=128, stops=())
    first = 0.0
    async for _ in gen:
        first = first or time.monotonic()
    return 127 / (time.monotonic() - first)


def summary(steps: list[tuple[float, int, bool]]) -> str:
    parts = []
    for label, pick in (
        ("2 threads", lambda t, late: t > 1 and not late),
        ("1 thread", lambda t, late: t == 1),
        ("stopped", lambda t, late: late),
    ):
        times = [s for s, t, late in steps if pick(t, late)]
        if times:
            parts.append(f"{label}: {len(times)} steps {sum(times):.2f} s (slowest {1000 * max(times):.0f} ms)")
    return "; ".join(parts)


async def run(args: argparse.Namespace) -> None:
    steps: list[tuple[float, int, bool]] = []
    trace(steps)
    options = EngineOptions(ctx=4096, threads=args.threads, gpu_layers=0, slots=4, max_queue=4, batch=512)
    engine = Engine("probe", args.model, options)
    await engine.load()
    print(f"{cpu_model()}\n{args.model.name}, {args.threads} threads, 128 tokens a run")
    try:
        for r in range(args.rounds):
            for state in ("quiet", "busy"):
                busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if state == "busy" else None
                time.sleep(0.5 if busy else 0)
                del steps[:]
                try:
                    rate = await stream(engine, r)
                finally:
                    if busy:
                        busy.kill()
                        busy.wait()
                print(f"round {r} {state:5} {rate:6.1f} tok/s  {summary(steps)}", flush=True)
                if busy:
                    time.sleep(9)
    finally:
        await engine.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path.home() / ".cache/edge-run-tests/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
