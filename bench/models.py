"""Many models in one server (issue 10): what loading, switching and sharing cost. Prints tables, asserts nothing.

    .venv/bin/python bench/models.py [--rounds 3] [--max-tokens 64]

Two different models from the catalog (fetched into the test cache): SmolLM2 135M Q4_1 ("one") and
Gemma 3 270M Q4_K_M ("two"), added to a fresh home as ``acme/one`` and ``acme/two``. Each figure is
the median of ``--rounds`` rounds, and each comparison is made in the same run:

- **cold load to first token**: a request to a model that is not loaded, against the same request
  again once it is (whose prompt then comes from the prefix cache: the difference is load plus prefill).
- **switching** at ``--max-loaded 1``: requests alternating one, two, one... each unloads the other model
  and loads its own; against the same requests to one model that stays loaded.
- **memory**: the server's RSS with both models loaded, against the registry's estimate (file + KV
  cache) and the memory budget.
- **two models at once**: each model's decode speed while the other answers too, against alone.
- **after the other's answer**: a request to one model half a second after the other answered (``4 *
  --max-tokens`` tokens), when that one's idle refresh computes its answer again as blocks; against alone.
  Alone means with no refresh left anywhere (``bench.settle``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import one_stream, settle, wait_healthy
from edge_run.models.catalog import load_catalog
from edge_run.models.fetch import fetch

CACHE = Path(os.environ.get("EDGE_RUN_TEST_CACHE", Path.home() / ".cache" / "edge-run-tests"))
MODELS = {"acme/one": "smollm2-135m-instruct-q4_1", "acme/two": "gemma-3-270m-q4_k_m"}


class Server:
    """``edge-run serve`` in a fresh home holding both models."""

    def __init__(self, *args: str) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="edge-run-bench-models-"))
        self.env = {**os.environ, "EDGE_RUN_HOME": str(self.home)}
        catalog = load_catalog()
        for model_id, entry_id in MODELS.items():
            entry = catalog.get(entry_id)
            assert entry is not None
            path = fetch(entry, CACHE)
            self.cli("models", "add", str(path), "--id", model_id)
        self.key = self.cli("keys", "create").strip()
        self.port = 19000 + os.getpid() % 500
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_run", "serve", "--port", str(self.port), "--ctx", "1024", *args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_healthy(self.url)

    def cli(self, *args: str) -> str:
        cmd = [sys.executable, "-m", "edge_run", *args]
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=True).stdout

    def health(self) -> dict:
        return dict(httpx.get(self.url + "/health", timeout=10).json())

    def rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def stream(self, model: str, prompt: str, max_tokens: int) -> tuple[float, float]:
        """One streamed answer: (time to first token, decode tokens/s)."""
        body = {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        headers = {"Authorization": f"Bearer {self.key}"}
        result = asyncio.run(one_stream(self.url + "/v1", headers, body))
        return result.ttft, (result.tokens - 1) / result.duration if result.duration else 0.0

    def both(self, prompt: str, max_tokens: int) -> list[float]:
        """Both models answering at once: each one's decode tokens/s."""

        async def run() -> list[float]:
            headers = {"Authorization": f"Bearer {self.key}"}
            bodies = [
                {"model": m, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                 "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
                for m in MODELS
            ]  # fmt: skip
            results = await asyncio.gather(*(one_stream(self.url + "/v1", headers, b) for b in bodies))
            return [(r.tokens - 1) / r.duration if r.duration else 0.0 for r in results]

        return asyncio.run(run())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    n = args.max_tokens

    cold: dict[str, list[float]] = {m: [] for m in MODELS}
    warm: dict[str, list[float]] = {m: [] for m in MODELS}
    switch: list[float] = []
    stay: list[float] = []
    alone: dict[str, list[float]] = {m: [] for m in MODELS}
    together: dict[str, list[float]] = {m: [] for m in MODELS}
    after: dict[str, list[float]] = {m: [] for m in MODELS}
    memory: list[tuple[int, int, int]] = []
    for r in range(args.rounds):
        server = Server("--max-loaded", "1", "--keep-alive", "-1")
        try:
            for model in MODELS:  # each request loads its model (and unloads the other)
                cold[model].append(server.stream(model, f"Round {r}: say hello.", 8)[0])
                warm[model].append(server.stream(model, f"Round {r}: say hello.", 8)[0])
            for i in range(6):  # alternating: every request is a switch
                start = time.monotonic()
                server.stream(list(MODELS)[i % 2], f"Switch {r}.{i}: count to three.", 8)
                switch.append(time.monotonic() - start)
            for i in range(6):  # the same kind of requests to the model that stays loaded
                start = time.monotonic()
                server.stream("acme/two", f"Stay {r}.{i}: count to three.", 8)
                stay.append(time.monotonic() - start)
        finally:
            server.stop()
        server = Server("--model", "acme/one", "--model", "acme/two", "--max-loaded", "2")
        try:
            for model in MODELS:
                settle(server.url, pid=server.proc.pid)
                alone[model].append(server.stream(model, "Tell me a long story about a cat.", n)[1])
            for model, other in zip(MODELS, reversed(MODELS), strict=True):
                settle(server.url, pid=server.proc.pid)
                server.stream(other, f"Round {r}: tell me a long story about a dog.", 4 * n)
                time.sleep(0.6)  # the other's refresh has begun
                after[model].append(server.stream(model, "Tell me a long story about a cat.", n)[1])
            for model, rate in zip(MODELS, server.both("Tell me a long story about a cat.", n), strict=True):
                together[model].append(rate)
            health = server.health()
            estimate = sum(m["memory_bytes"] for m in health["models"])
            memory.append((server.rss(), estimate, health["memory_budget_bytes"] or 0))
            peak = health["threads_peak"], health["cores"]
        finally:
            server.stop()

    mib = 1 << 20
    print(f"\n## Many models, one server ({args.rounds} rounds, medians)\n")
    print("| Model | cold load to first token | loaded, first token | ratio |")
    print("|---|---|---|---|")
    for m in MODELS:
        c, w = median(cold[m]), median(warm[m])
        print(f"| {m} | {c * 1000:.0f} ms | {w * 1000:.0f} ms | {c / w:.1f}x |")
    s, k = median(switch), median(stay)
    print(f"\nSwitching at --max-loaded 1: {s * 1000:.0f} ms a request (8 tokens), against {k * 1000:.0f} ms "
          f"with no switch: {s / k:.1f}x, {(s - k) * 1000:.0f} ms a switch.")  # fmt: skip
    rss, estimate, budget = (statistics.median(x) for x in zip(*memory, strict=True))
    print(f"\nMemory with both loaded: RSS {rss / mib:.0f} MiB; estimate (files + KV cache) {estimate / mib:.0f} MiB; "
          f"budget {budget / mib:.0f} MiB.")  # fmt: skip
    print("\n| Model | alone tok/s | beside the other tok/s | ratio | after the other's answer tok/s | ratio |")
    print("|---|---|---|---|---|---|")
    for m in MODELS:
        a, t, f = median(alone[m]), median(together[m]), median(after[m])
        print(f"| {m} | {a:.1f} | {t:.1f} | {t / a:.2f} | {f:.1f} | {f / a:.2f} |")
    total_alone = sum(median(alone[m]) for m in MODELS) / len(MODELS)
    total_both = sum(median(together[m]) for m in MODELS)
    print(f"\nTogether: {total_both:.1f} tok/s in all, against {total_alone:.1f} (mean of the two alone); "
          f"threads at once at most {peak[0]} of {peak[1]} cores.")  # fmt: skip


if __name__ == "__main__":
    main()
