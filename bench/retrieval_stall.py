"""``retrieval.py``'s stall scenario: a chat stream on edge-run while an embedding burst runs on the same model.

edge-run serves the chat test model (a ``[[model]]`` path). One client streams 128 tokens (greedy, end of
generation banned, so every answer has exactly 128); once 4 tokens have arrived, another client sends one
embedding request of 256 inputs to the same model. edge-run runs each packed batch (at most 512 tokens) as its
own call between two generation steps, so the stream should stall for about one batch at a time, not for the
whole burst. The bench prints the largest gap between two streamed chunks and the stream's total time, with
and without the burst, and the burst's own time alone and beside the stream. Every prompt is new (a salt), and
the bench waits for edge-run's idle work (its refresh of the latest answer) between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import itertools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
from sse_client import sse_events

from bench import settle

__all__ = ["stall"]

TOKENS, BURST, AFTER = 128, 256, 4


def eog_tokens(model: Path) -> list[int]:
    """The model's end-of-generation token ids (its vocabulary alone is loaded)."""
    import llama_cpp as L

    quiet = L.llama_log_callback(lambda *_: None)
    L.llama_log_set(quiet, ctypes.c_void_p(0))
    params = L.llama_model_default_params()
    params.vocab_only = True
    m = L.llama_model_load_from_file(str(model).encode(), params)
    vocab = L.llama_model_get_vocab(m)
    ids = [t for t in range(L.llama_vocab_n_tokens(vocab)) if L.llama_vocab_is_eog(vocab, t)]
    L.llama_model_free(m)
    return ids


async def stream(url: str, salt: str, eog: list[int], tokens: asyncio.Event | None = None) -> list[float]:
    """The arrival time of each content chunk of one greedy 128-token stream, and the send time first."""
    body = {
        "model": "chat",
        "messages": [{"role": "user", "content": f"Story {salt}. Tell me a long story about a lighthouse."}],
        "max_tokens": TOKENS,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logit_bias": {str(t): -100 for t in eog},
    }
    times = [time.perf_counter()]
    async for data in sse_events(url + "/v1/chat/completions", {}, body):
        if data == b"[DONE]":
            continue
        for choice in msgspec.json.decode(data).get("choices", []):
            if (choice.get("delta") or {}).get("content"):
                times.append(time.perf_counter())
                if tokens is not None and len(times) > AFTER:
                    tokens.set()
    return times


async def burst(url: str, docs: list[str], after: asyncio.Event | None = None) -> tuple[float, float]:
    """One embedding request of 256 inputs (the documents round robin), once ``after`` is set: its start and end."""
    if after is not None:
        await after.wait()
    body = {"model": "chat", "input": [docs[i % len(docs)] for i in range(BURST)]}
    async with httpx.AsyncClient(timeout=600) as http:
        start = time.perf_counter()
        r = await http.post(url + "/v1/embeddings", json=body)
        end = time.perf_counter()
    if r.status_code != 200 or len(r.json()["data"]) != BURST:
        raise RuntimeError(f"embedding burst: {r.status_code} {r.text[:300]}")
    return start, end


def gaps(times: list[float], window: tuple[float, float] | None = None) -> float:
    """The largest gap between two chunks (the first chunk onwards), or only those that end inside ``window``."""
    pairs = itertools.pairwise(times[1:])
    return max((b - a for a, b in pairs if window is None or window[0] < b <= window[1] + 0.5), default=0.0)


async def with_burst(url: str, salt: str, eog: list[int], docs: list[str]) -> dict[str, Any]:
    started = asyncio.Event()
    times, window = await asyncio.gather(stream(url, salt, eog, started), burst(url, docs, started))
    return {"times": times, "window": window}


def summarize(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over the runs: chunks, arrival groups (chunks over 2 ms apart), 90th-percentile and largest gap,
    the largest gap that ended during the burst, the stream's total time and the burst's."""

    def med(f: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(f(r) for r in runs)

    def steps(times: list[float]) -> list[float]:
        return [b - a for a, b in itertools.pairwise(times[1:])]

    burst = bool(runs[0].get("window"))
    return {
        "chunks": med(lambda r: len(r["times"]) - 1),
        "groups": med(lambda r: 1 + sum(g > 0.002 for g in steps(r["times"]))),
        "p90": med(lambda r: statistics.quantiles(steps(r["times"]), n=10)[-1]),
        "gap": med(lambda r: gaps(r["times"])),
        "gap_burst": med(lambda r: gaps(r["times"], r["window"])) if burst else float("nan"),
        "total": med(lambda r: r["times"][-1] - r["times"][0]),
        "burst": med(lambda r: r["window"][1] - r["window"][0]) if burst else float("nan"),
    }


def peer_burst(args: argparse.Namespace, docs: list[str]) -> tuple[str, list[float]] | None:
    """The same 256-input request on llama-server (``--embedding --pooling mean``, the chat model), once a round."""
    if not args.llama_server or not Path(args.llama_server).exists():
        return None
    from retrieval import start_peer

    peer = start_peer(args.llama_server, "chat", args.chat_model, args.threads, "--pooling mean")
    try:
        asyncio.run(burst(peer.url, docs[:8]))
        return peer.flags, [(lambda w: w[1] - w[0])(asyncio.run(burst(peer.url, docs))) for _ in range(args.rounds)]
    finally:
        peer.stop()


def measure(url: str, args: argparse.Namespace, eog: list[int], docs: list[str], wait: Callable[[], None]) -> tuple:
    """``--rounds`` rounds of: the stream alone and beside the burst (in alternating order), then the burst alone."""
    asyncio.run(stream(url, "warm", eog))
    asyncio.run(burst(url, docs))
    wait()
    quiet, busy, alone = [], [], []
    for r in range(args.rounds):
        for cond in ("quiet", "busy") if r % 2 == 0 else ("busy", "quiet"):
            if cond == "quiet":
                quiet.append({"times": asyncio.run(stream(url, f"{r}-q", eog))})
            else:
                busy.append(asyncio.run(with_burst(url, f"{r}-b", eog, docs)))
            wait()
        alone.append((lambda w: w[1] - w[0])(asyncio.run(burst(url, docs))))
        wait()
    return quiet, busy, alone


def stall(args: argparse.Namespace, start: Callable[..., Any], docs: list[str]) -> None:
    """Print the stream's chunk gaps and total time, alone and beside the burst; medians of ``--rounds``."""
    eog = eog_tokens(args.chat_model)
    server = start(args.chat_model)
    print(f"\nstall: {args.chat_model.name} on {server.flags}")
    try:
        quiet, busy, alone = measure(
            server.url, args, eog, docs, lambda: settle(server.url + "/v1", timeout=120, pid=server.proc.pid)
        )
    finally:
        server.stop()
    peer = peer_burst(args, docs)
    print(f"{'stream of 128 tokens':32} {'chunks':>6} {'arrivals':>8} {'p90 gap ms':>10} {'largest gap ms':>14} "
          f"{'largest in burst':>16} {'total s':>7} {'burst s':>7}")  # fmt: skip
    for name, s in (("alone", summarize(quiet)), (f"beside {BURST} embedding inputs", summarize(busy))):
        in_burst = "-" if s["gap_burst"] != s["gap_burst"] else f"{s['gap_burst'] * 1000:.0f}"
        burst_s = "-" if s["burst"] != s["burst"] else f"{s['burst']:.2f}"
        print(f"{name:32} {s['chunks']:>6.0f} {s['groups']:>8.0f} {s['p90'] * 1000:>10.1f} {s['gap'] * 1000:>14.0f} "
              f"{in_burst:>16} {s['total']:>7.2f} {burst_s:>7}")  # fmt: skip
    print(f"the {BURST}-input embedding request alone on edge-run: {statistics.median(alone):.2f} s "
          f"(rounds {' '.join(f'{x:.2f}' for x in alone)})")  # fmt: skip
    if peer is not None:
        print(f"the same request on {peer[0]}: {statistics.median(peer[1]):.2f} s "
              f"(rounds {' '.join(f'{x:.2f}' for x in peer[1])})")  # fmt: skip
