"""Images beside a stream (issue 26): how long a chat stream stalls while another request's image is encoded.

    python bench/media_stall.py [--rounds 3] [--quick] [--threads 2] [--kind vision|vision-gemma3] [--size S]

edge-run serves the chat test model (SmolLM2-135M) with a random-weight projector of SmolVLM-256M's own size
(``bench/synth.py vision --size smolvlm-256m``: SigLIP base at 512, longest edge 2048), as ``vis/smol`` with
``--slots 2``. Scenario A: one client streams 128 tokens alone (greedy, end of generation banned, so every
answer has exactly 128). Scenario B: the same stream, and once 8 chunks have arrived another client sends one
chat request with one new random-pixel PNG (512x512, then 1024x768) and ``max_tokens`` 1. The bench prints the
stream's largest gap between two chunks, its 90th-percentile gap and its total time, the image request's time to
first token, and the image request alone for reference; medians of ``--rounds``. It also counts the projector's
encode calls per image (``media_encoded`` in ``/health``), how many ran beside the engine thread while the stream
generated (``media_encoded_beside``), and times one tile's encode in a process of its own.
Every image is new (a fresh seed), so nothing comes from edge-run's caches; between scenarios the bench sleeps 1 s.
``--kind vision-gemma3`` serves a Gemma 3 projector instead (``--size`` gemma3-4b by default: Gemma 3 4B's SigLIP
at 896, patch 14); mtmd resizes every image to 896x896, one chunk and one encode call of the whole tower.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import synth_media  # noqa: E402
from peers import _free_port, cpu_model, stop_process  # noqa: E402
from retrieval_stall import eog_tokens  # noqa: E402
from sse_client import sse_events  # noqa: E402
from synth import DEFAULT_TOKENIZER  # noqa: E402

from bench import wait_healthy  # noqa: E402

MODEL_ID = "vis/smol"
SIZE = {"vision": "smolvlm-256m", "vision-gemma3": "gemma3-4b"}  # each --kind's default --size
TOKENS, AFTER = 128, 8
IMAGES = ((512, 512), (1024, 768))
SEEDS = itertools.count(100)


def random_png(width: int, height: int) -> bytes:
    """A new random-pixel PNG (every call another seed)."""
    rgb = np.random.default_rng(next(SEEDS)).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return synth_media.png(rgb)


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    home: Path
    flags: str

    def stop(self) -> None:
        stop_process(self.proc)
        shutil.rmtree(self.home, ignore_errors=True)

    def encoded(self) -> tuple[int, int]:
        """The projector's encode calls so far, and how many of them ran beside the engine thread."""
        models = httpx.get(self.url + "/health", timeout=10).json()["models"]
        card = next(m for m in models if m["id"] == MODEL_ID)
        return card["media_encoded"], card.get("media_encoded_beside", 0)


def start(model: Path, mmproj: Path, threads: int) -> Server:
    """``models add MODEL --id vis/smol --mmproj PROJ`` in a fresh EDGE_RUN_HOME, then ``serve`` it."""
    home = Path(tempfile.mkdtemp(prefix="edge-run-media-"))
    env = {**os.environ, "EDGE_RUN_HOME": str(home)}
    add = [sys.executable, "-m", "edge_run", "models", "add", str(model), "--id", MODEL_ID, "--mmproj", str(mmproj)]
    subprocess.run(add, cwd=ROOT, env=env, check=True, capture_output=True)
    port = _free_port()
    flags = ["--model", MODEL_ID, "--slots", "2", "--ctx", "4096", "--threads", str(threads), "--no-auth",
             "--port", str(port), "--keep-alive", "-1", "--no-browser"]  # fmt: skip
    log = (home / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "edge_run", "serve", *flags], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, 120, proc)
    return Server(url, proc, home, "edge-run serve " + " ".join(flags[:8]))


def body(content: Any, max_tokens: int, eog: list[int]) -> dict[str, Any]:
    return {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "logit_bias": {str(t): -100 for t in eog},
    }


async def stream(url: str, salt: str, eog: list[int], started: asyncio.Event | None = None) -> list[float]:
    """The send time, then the arrival time of each content chunk of one greedy 128-token stream."""
    times = [time.perf_counter()]
    text = f"Story {salt}. Tell me a long story about a lighthouse."
    async for data in sse_events(url + "/v1/chat/completions", {}, body(text, TOKENS, eog)):
        if data == b"[DONE]":
            continue
        for choice in msgspec.json.decode(data).get("choices", []):
            if (choice.get("delta") or {}).get("content"):
                times.append(time.perf_counter())
                if started is not None and len(times) > AFTER:
                    started.set()
    return times


async def image(url: str, png: bytes, eog: list[int], after: asyncio.Event | None = None) -> dict[str, float]:
    """One chat request with ``png`` and ``max_tokens`` 1, once ``after`` is set: its time to first token."""
    if after is not None:
        await after.wait()
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    content = [{"type": "text", "text": "What is in this picture?"},
               {"type": "image_url", "image_url": {"url": data_url}}]  # fmt: skip
    start, first, prompt = time.perf_counter(), 0.0, 0
    async for data in sse_events(url + "/v1/chat/completions", {}, body(content, 1, eog)):
        if data == b"[DONE]":
            continue
        chunk = msgspec.json.decode(data)
        if any((c.get("delta") or {}).get("content") for c in chunk.get("choices", [])):
            first = first or time.perf_counter()
        if chunk.get("usage"):
            prompt = chunk["usage"]["prompt_tokens"]
    return {"ttft": first - start, "prompt_tokens": prompt}


async def beside(url: str, salt: str, eog: list[int], png: bytes) -> dict[str, Any]:
    started = asyncio.Event()
    times, img = await asyncio.gather(stream(url, salt, eog, started), image(url, png, eog, started))
    return {"times": times, **img}


def steps(times: list[float]) -> list[float]:
    """The gaps between consecutive chunks, from the first chunk on."""
    return [b - a for a, b in itertools.pairwise(times[1:])]


def stream_stats(times: list[float]) -> dict[str, float]:
    gaps = steps(times)
    return {"chunks": len(times) - 1, "p90": statistics.quantiles(gaps, n=10)[-1], "gap": max(gaps),
            "stalls": sum(g > 1.0 for g in gaps), "total": times[-1] - times[0]}  # fmt: skip


def measure(server: Server, eog: list[int], rounds: int) -> dict[str, list[dict[str, float]]]:
    """``rounds`` rounds of: the stream alone, the stream beside each image, then each image alone."""
    url = server.url
    asyncio.run(stream(url, "warm", eog))
    asyncio.run(image(url, random_png(256, 64), eog))  # 4 tiles and the overview: every graph built once
    time.sleep(1)
    out: dict[str, list[dict[str, float]]] = {"alone": []}
    for r in range(rounds):
        out["alone"].append(stream_stats(asyncio.run(stream(url, f"{r}-a", eog))))
        time.sleep(1)
        for w, h in IMAGES:
            before = server.encoded()
            run = asyncio.run(beside(url, f"{r}-{w}", eog, random_png(w, h)))
            calls, aside = (a - b for a, b in zip(server.encoded(), before, strict=True))
            out.setdefault(f"beside {w}x{h}", []).append(
                {**stream_stats(run["times"]), "ttft": run["ttft"], "calls": calls, "aside": aside}
            )
            time.sleep(1)
        for w, h in IMAGES:
            png, before = random_png(w, h), server.encoded()
            img = asyncio.run(image(url, png, eog))
            out.setdefault(f"image {w}x{h}", []).append({**img, "calls": server.encoded()[0] - before[0]})
            time.sleep(1)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1].get('gap', v[-1].get('ttft', 0)):.2f}"
                                             for k, v in out.items()), file=sys.stderr, flush=True)  # fmt: skip
    return out


def encode_part(mmproj: Path, threads: int) -> None:
    """In a process of its own: encode one 256x64 image (4 tiles and the overview) after another as a warm-up,
    through mtmd on ``threads`` threads; print a JSON line with the milliseconds per encode call (a Gemma 3
    projector: one 896x896 image each)."""
    import ctypes

    import llama_cpp
    from llama_cpp import mtmd_cpp as m

    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    model = llama_cpp.llama_model_load_from_file(str(DEFAULT_TOKENIZER).encode(), mparams)
    params = m.mtmd_context_params_default()
    params.n_threads, params.print_timings = threads, False
    ctx = m.mtmd_init_from_file(str(mmproj).encode(), model, params)
    vocab, n_embd = llama_cpp.llama_model_get_vocab(model), llama_cpp.llama_model_n_embd_inp(model)
    prompt = f"<|im_start|>user\n{m.mtmd_default_marker().decode()}What is this?<|im_end|>\n"
    runs = []
    for png in synth_media.sample_images((256, 64)):
        buf = (ctypes.c_uint8 * len(png)).from_buffer_copy(png)
        runs.append(synth_media._run(llama_cpp, m, ctx, vocab, n_embd, m.mtmd_helper_bitmap_init_from_buf(
            ctx, buf, len(buf), False), prompt))  # fmt: skip
    m.mtmd_free(ctx)
    last = runs[-1]
    print(json.dumps({"calls": last["n_media_chunks"], "ms_per_call": last["encode_ms"] / last["n_media_chunks"],
                      "rows_per_call": last["n_media_tokens"] // last["n_media_chunks"]}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 round")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", type=Path, default=DEFAULT_TOKENIZER, help="the text model (n_embd 576)")
    ap.add_argument("--kind", choices=list(SIZE), default="vision", help="the projector (bench/synth.py KIND)")
    ap.add_argument("--size", help="its size (synth_media.SIZES): smolvlm-256m for vision, gemma3-4b for vision-gemma3")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    ap.add_argument("--mmproj", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part == "encode":
        encode_part(args.mmproj, args.threads)
        return
    args.size = args.size or SIZE[args.kind]
    if args.size not in synth_media.SIZES[args.kind]:
        ap.error(f"--size: {args.kind} has {', '.join(synth_media.SIZES[args.kind])}")
    rounds = 1 if args.quick else args.rounds
    tmp = Path(tempfile.mkdtemp(prefix="media-stall-"))
    try:
        mmproj = synth_media.write_media(args.kind, tmp, size=args.size)
        part = [sys.executable, __file__, "--part", "encode", "--mmproj", str(mmproj), "--threads", str(args.threads)]
        enc = json.loads(subprocess.run(part, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        eog = eog_tokens(args.model)
        server = start(args.model, mmproj, args.threads)
        try:
            runs = measure(server, eog, rounds)
        finally:
            server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(args, server, enc, runs, rounds)


def report(args: argparse.Namespace, server: Server, enc: dict, runs: dict[str, list[dict]], rounds: int) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    print(f"{cpu_model()}\n{args.model.name} + synthetic {args.size} projector (F16, random weights) as {MODEL_ID}, "
          f"{server.flags}; medians of {rounds} round{'s' * (rounds > 1)}")  # fmt: skip
    print(f"{'':28} {'chunks':>6} {'p90 gap ms':>10} {'largest gap ms':>14} {'gaps > 1 s':>10} {'total s':>7} "
          f"{'image TTFT s':>12}")  # fmt: skip
    for name, label in [("alone", "stream of 128 tokens alone")] + [
        (f"beside {w}x{h}", f"stream + image {w}x{h}") for w, h in IMAGES
    ]:
        ttft = f"{med(name, 'ttft'):.2f}" if "ttft" in runs[name][0] else "-"
        p90, gap = med(name, "p90") * 1000, med(name, "gap") * 1000
        calls = f"   {med(name, 'aside'):.0f} of {med(name, 'calls'):.0f} encode calls beside" if ttft != "-" else ""
        print(f"{label:28} {med(name, 'chunks'):>6.0f} {p90:>10.1f} {gap:>14.0f} "
              f"{med(name, 'stalls'):>10.0f} {med(name, 'total'):>7.2f} {ttft:>12}{calls}")  # fmt: skip
    for w, h in IMAGES:
        name = f"image {w}x{h}"
        print(f"{'image ' + f'{w}x{h}' + ' alone':28} {'-':>6} {'-':>10} {'-':>14} {'-':>10} {'-':>7} "
              f"{med(name, 'ttft'):>12.2f}"
              f"   prompt {med(name, 'prompt_tokens'):.0f} tokens, {med(name, 'calls'):.0f} encode calls")  # fmt: skip
    side = synth_media.SIZES[args.kind][args.size].image
    print(f"one encode call (one {side}x{side} tile, {enc['rows_per_call']} rows) in-process "
          f"on {args.threads} threads: {enc['ms_per_call']:.0f} ms")  # fmt: skip
    for name in runs:
        key = "ttft" if name.startswith("image") else "gap"
        print(f"  {name} {key} by round: {' '.join(f'{r[key]:.2f}' for r in runs[name])} s")


if __name__ == "__main__":
    main()
