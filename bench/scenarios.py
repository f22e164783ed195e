"""The scenarios of ``bench.py --scenario``: each compares edge-run with ``--compare`` servers in one run.

- ``grammar``: one stream of each constrained request (a JSON schema, JSON mode, a forced tool call),
  greedy: decode speed from the first token to the last.
- ``contention``: single-stream speed on a quiet machine and beside ``--contention N`` CPU-bound
  processes (a compile, a browser tab), for edge-run, edge-run at ``--threads 1`` (the best static
  setting under load) and every ``--compare`` server. Each round measures quiet, then busy, then
  waits 9 s of quiet before the next round.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

Target = tuple[str, str, str, str]  # name, base URL, key, model

PEOPLE = {
    "type": "object",
    "properties": {
        "people": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "city": {"type": "string"}, "age": {"type": "integer"}},
                "required": ["name", "city", "age"],
            },
        }
    },
    "required": ["people"],
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a list of cities",
        "parameters": {
            "type": "object",
            "properties": {"cities": {"type": "array", "items": {"type": "string"}}, "unit": {"enum": ["C", "F"]}},
            "required": ["cities", "unit"],
        },
    },
}
ASK_PEOPLE = "Invent twenty people, each with a name, a city and an age, as JSON."
GRAMMAR_REQUESTS: dict[str, dict] = {
    "json_schema": {
        "messages": [{"role": "user", "content": ASK_PEOPLE}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "people", "schema": PEOPLE}},
    },
    "json_object": {
        "messages": [{"role": "user", "content": ASK_PEOPLE}],
        "response_format": {"type": "json_object"},
    },
    "tool call": {
        "messages": [{"role": "user", "content": "What is the weather in twenty European capitals?"}],
        "tools": [WEATHER],
        "tool_choice": "required",
    },
}


Stream = Callable[[str, dict[str, str], dict], Awaitable[Any]]  # bench.one_stream


def grammar(targets: list[Target], rounds: int, max_tokens: int, stream: Stream, settle: Callable[[str], None]) -> None:
    runs: dict[tuple[str, str], list[tuple[int, float]]] = {}  # (tokens, tokens/s first to last)
    for _ in range(rounds):
        for kind, request in GRAMMAR_REQUESTS.items():
            for name, url, key, model in targets:
                body = {**request, "model": model, "max_tokens": max_tokens, "temperature": 0, "stream": True}
                body["stream_options"] = {"include_usage": True}
                headers = {"Authorization": f"Bearer {key}"} if key else {}
                r = asyncio.run(stream(url, headers, body))
                runs.setdefault((kind, name), []).append((r.tokens, (r.tokens - 1) / r.duration))
                settle(url)
    print(f"grammar: {max_tokens} tokens at most, greedy, one stream, median of {rounds} rounds\n")
    print(f"{'request':12} {'server':40} {'tokens':>6} {'tok/s':>7}")
    for (kind, name), timed in runs.items():
        tokens, rate = statistics.median(t for t, _ in timed), statistics.median(r for _, r in timed)
        print(f"{kind:12} {name[:40]:40} {tokens:>6.0f} {rate:>7.1f}")
    print(f"\n{'paired by round (tok/s ratio)':56} {'median':>7}  rounds")
    for kind in GRAMMAR_REQUESTS:
        mine = runs[(kind, targets[0][0])]
        for name, *_ in targets[1:]:
            ratios = [a[1] / b[1] for a, b in zip(mine, runs[(kind, name)], strict=True)]
            print(
                f"{f'{kind}: edge-run ÷ {name}'[:56]:56} {statistics.median(ratios):>6.2f}x  "
                + " ".join(f"{r:.2f}" for r in ratios)
            )


def busy_processes(n: int) -> list[subprocess.Popen]:
    """``n`` processes that each keep one core busy, as a compile or a browser tab would."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def contention(
    targets: list[Target],
    rounds: int,
    busy: int,
    one_stream_rate: Callable[[Target], float],
    settle: Callable[[str], None],
) -> None:
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for state in ("quiet", "busy"):
            procs = busy_processes(busy) if state == "busy" else []
            try:
                time.sleep(0.5 if procs else 0)
                for target in targets:
                    rates.setdefault((target[0], state), []).append(one_stream_rate(target))
                    settle(target[1])
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
            if procs:  # quiet again: edge-run takes up to 8 s to notice (engine/threads.py); give it 9
                time.sleep(9)
    print(f"contention: single stream, quiet and beside {busy} CPU-bound processes, median of {rounds} rounds\n")
    print(f"{'server':40} {'quiet tok/s':>11} {'busy tok/s':>10}")
    for name, *_ in targets:
        quiet = statistics.median(rates[(name, "quiet")])
        print(f"{name[:40]:40} {quiet:>11.1f} {statistics.median(rates[(name, 'busy')]):>10.1f}")
    print(f"\n{'paired by round (tok/s ratio)':56} {'median':>7}  rounds")
    mine = targets[0][0]
    for name, *_ in targets[1:]:
        for state in ("quiet", "busy"):
            ratios = [a / b for a, b in zip(rates[(mine, state)], rates[(name, state)], strict=True)]
            print(
                f"{f'{state}: {mine} ÷ {name}'[:56]:56} {statistics.median(ratios):>6.2f}x  "
                + " ".join(f"{r:.2f}" for r in ratios)
            )
