"""Load and faults (issue 11): many streaming clients for a while, some of them leaving mid-answer. Prints figures.

    .venv/bin/python bench/soak.py [--seconds 60] [--clients-per-slot 8] [--leave 0.2]

Starts ``edge-run serve`` on the test model (4 slots, the default queue of 64), then keeps
``clients-per-slot x slots`` clients busy for ``--seconds``: each sends a streamed chat completion,
reads it to the end, and starts over; a ``--leave`` share of the requests disconnect at a random point
instead. It prints, and asserts nothing:

- answers completed, and of those **truncated** (no ``finish_reason``, or no ``[DONE]``): expected 0;
- requests refused with 429, against the number that could not have had a seat (beyond slots + queue);
- any other status (expected none);
- busy slots and queued requests 2 s after the end: expected 0;
- the server's RSS after a warm-up request and at the end: growth expected under 10%.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import wait_healthy
from edge_run.models.catalog import load_catalog
from edge_run.models.fetch import fetch

CACHE = Path(os.environ.get("EDGE_RUN_TEST_CACHE", Path.home() / ".cache" / "edge-run-tests"))
SLOTS, QUEUE = 4, 64


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def client(url: str, key: str, until: float, leave: float, tally: Counter, rng: random.Random) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(timeout=120) as http:
        while time.monotonic() < until:
            body = {
                "model": "soak",
                "messages": [{"role": "user", "content": f"Tell me about the number {rng.randint(1, 10**6)}."}],
                "max_tokens": rng.randint(16, 96),
                "stream": True,
            }
            leaves_after = rng.randint(1, 30) if rng.random() < leave else None
            try:
                async with http.stream("POST", url + "/v1/chat/completions", json=body, headers=headers) as r:
                    if r.status_code != 200:
                        await r.aread()
                        tally[f"status {r.status_code}"] += 1
                        if r.status_code == 429:
                            await asyncio.sleep(float(r.headers.get("retry-after", "1")) * rng.random())
                        continue
                    events, finished, done = 0, False, False
                    async for line in r.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        data = line[6:]
                        if data == "[DONE]":
                            done = True
                            break
                        events += 1
                        chunk = json.loads(data)
                        finished |= any(c.get("finish_reason") for c in chunk.get("choices", []))
                        if leaves_after is not None and events >= leaves_after:
                            break
                    if leaves_after is not None and not done:
                        tally["left mid-answer"] += 1
                    elif finished and done:
                        tally["completed"] += 1
                    else:
                        tally["truncated"] += 1
            except httpx.HTTPError as exc:
                tally[f"error {type(exc).__name__}"] += 1


async def run(url: str, key: str, clients: int, seconds: float, leave: float) -> Counter:
    tally: Counter = Counter()
    until = time.monotonic() + seconds
    rngs = [random.Random(i) for i in range(clients)]
    await asyncio.gather(*(client(url, key, until, leave, tally, rng) for rng in rngs))
    return tally


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--clients-per-slot", type=int, default=8)
    ap.add_argument("--leave", type=float, default=0.2)
    args = ap.parse_args()
    entry = load_catalog().default_entry
    model = fetch(entry, CACHE)
    home = Path(tempfile.mkdtemp(prefix="edge-run-soak-"))
    env = {**os.environ, "EDGE_RUN_HOME": str(home)}
    cli = [sys.executable, "-m", "edge_run"]
    subprocess.run([*cli, "models", "add", str(model), "--id", "soak"], env=env, check=True, capture_output=True)
    key = subprocess.run([*cli, "keys", "create"], env=env, check=True, capture_output=True, text=True).stdout.strip()
    port = 19500 + os.getpid() % 400
    serve = [*cli, "serve", "--port", str(port), "--model", "soak", "--slots", str(SLOTS), "--ctx", "1024"]
    proc = subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url)
        warm = {"model": "soak", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16}
        httpx.post(url + "/v1/chat/completions", json=warm, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        rss_before = rss(proc.pid)
        clients = args.clients_per_slot * SLOTS
        started = time.monotonic()
        tally = asyncio.run(run(url, key, clients, args.seconds, args.leave))
        elapsed = time.monotonic() - started
        time.sleep(2)
        model_health = httpx.get(url + "/health", timeout=10).json()["models"][0]
        rss_after = rss(proc.pid)
    finally:
        proc.terminate()
        proc.wait(60)
    completed = tally["completed"]
    print(f"\n## Soak: {clients} streaming clients on {SLOTS} slots (queue {QUEUE}), {elapsed:.0f} s, "
          f"{args.leave:.0%} of requests leave mid-answer\n")  # fmt: skip
    print("| Figure | Value | Expected |")
    print("|---|---|---|")
    print(f"| answers completed | {completed} | |")
    print(f"| truncated answers (not cancelled) | {tally['truncated']} | 0 |")
    print(f"| requests that left mid-answer | {tally['left mid-answer']} | about {args.leave:.0%} |")
    print(f"| 429 refusals | {tally['status 429']} | only beyond slots + queue ({SLOTS + QUEUE}); "
          f"{clients} clients never exceed it |")  # fmt: skip
    others = {k: v for k, v in tally.items() if k.startswith(("status", "error")) and k != "status 429"}
    print(f"| other failures | {sum(others.values())} {others or ''} | 0 |")
    busy, queued = model_health["slots_busy"], model_health["queued"]
    print(f"| busy slots / queued 2 s after the end | {busy} / {queued} | 0 / 0 |")
    growth = (rss_after - rss_before) / rss_before if rss_before else float("nan")
    print(f"| server RSS | {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB ({growth:+.1%}) | under +10% |")
    tokens = model_health.get("tokens_generated", 0)
    print(f"\n{tokens} tokens generated in all, {tokens / elapsed:.0f} tokens/s.")


if __name__ == "__main__":
    main()
