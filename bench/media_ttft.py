"""Time to first token with an image, and on turn 2 about it (issue 26), edge-run against llama-server.

    python bench/media_ttft.py [--llama-server PATH] [--rounds 3] [--kind vision|vision-gemma3] [--size S]
                               [--image 512x512] [--threads 2]

Both servers serve the same files: the chat test model (SmolLM2-135M; for ``--kind vision`` a copy whose spare
control tokens are renamed to idefics3's markers, which llama-server needs) with a random-weight projector of a
real model's size (``bench/synth.py vision --size smolvlm-256m``, SigLIP base at 512, longest edge 2048 by
default; ``--kind vision-gemma3 --size gemma3-4b`` for Gemma 3 4B's tower). edge-run: ``--slots 1``;
llama-server: ``-np 1``, ``--no-repack``, its prompt cache on (``cache_prompt``, its default). Same context, same
threads.

Each round sends one new random-pixel PNG to each server in turn (the order flips every round): turn 1 asks about
it (greedy, end of generation banned, ``--tokens`` answer tokens, streamed); turn 2, sent as soon as turn 1 ends
(no waiting for either server's background work), is that conversation with the server's own answer and one more
question. The bench prints each server's time to first token on both turns (medians of ``--rounds``) and the
issue's targets: turn 1 llama-server ÷ edge-run ≥ 1.0, and edge-run's turn 2 at most 20% of its turn 1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import synth_media  # noqa: E402
from media_oracle import CTX, LLAMA_SERVER, LOOKED_UP, EdgeRun, with_markers  # noqa: E402
from media_stall import random_png  # noqa: E402
from peers import cpu_model, start_llama_server, stop_process  # noqa: E402
from retrieval_stall import eog_tokens  # noqa: E402
from sse_client import sse_events  # noqa: E402
from synth import DEFAULT_TOKENIZER  # noqa: E402

SIZE = {"vision": "smolvlm-256m", "vision-gemma3": "gemma3-4b"}  # each --kind's default --size
TURN_2 = "And what colours does it have? Answer in one sentence."


def question(png: bytes) -> dict[str, Any]:
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    return {"role": "user", "content": [{"type": "text", "text": "Describe this picture."},
                                         {"type": "image_url", "image_url": {"url": url}}]}  # fmt: skip


async def turn(
    url: str, model: str, messages: list[dict[str, Any]], tokens: int, eog: list[int]
) -> tuple[float, str, int]:
    """One streamed greedy request, end of generation banned: its time to first token, its text, its prompt tokens."""
    body = {"model": model, "messages": messages, "max_tokens": tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}, "logit_bias": {str(t): -100 for t in eog}}  # fmt: skip
    start, first, text, prompt = time.perf_counter(), 0.0, [], 0
    async for data in sse_events(url + "/v1/chat/completions", {}, body):
        if data == b"[DONE]":
            continue
        chunk = msgspec.json.decode(data)
        for choice in chunk.get("choices", []):
            if piece := (choice.get("delta") or {}).get("content"):
                first = first or time.perf_counter()
                text.append(piece)
        if chunk.get("usage"):
            prompt = chunk["usage"]["prompt_tokens"]
    if not first:
        raise RuntimeError(f"{url} answered no content")
    return first - start, "".join(text), prompt


def conversation(url: str, model: str, png: bytes, tokens: int, eog: list[int]) -> dict[str, float]:
    """Turn 1 about ``png``, then turn 2 at once."""
    turns = [question(png)]
    ttft1, answer, prompt1 = asyncio.run(turn(url, model, turns, tokens, eog))
    turns += [{"role": "assistant", "content": answer}, {"role": "user", "content": TURN_2}]
    ttft2, _, prompt2 = asyncio.run(turn(url, model, turns, tokens, eog))
    return {"ttft1": ttft1, "ttft2": ttft2, "prompt1": prompt1, "prompt2": prompt2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llama-server", type=Path, default=LLAMA_SERVER)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=16, help="answer tokens on turn 1")
    ap.add_argument("--kind", choices=list(SIZE), default="vision")
    ap.add_argument("--size", help="the projector's size (synth_media.SIZES): smolvlm-256m or gemma3-4b by default")
    ap.add_argument("--image", default="512x512", help="WIDTHxHEIGHT of each round's random-pixel PNG")
    args = ap.parse_args()
    args.size = args.size or SIZE[args.kind]
    width, height = (int(v) for v in args.image.split("x"))
    work = Path(tempfile.mkdtemp(prefix="media-ttft-"))
    servers: list[tuple[str, str, str, Any]] = []  # (name, url, model id, stop)
    try:
        model = DEFAULT_TOKENIZER
        if args.kind == "vision":  # llama-server refuses a prompt with the markers this vocabulary lacks
            model = work / "smollm2-markers.gguf"
            with_markers(DEFAULT_TOKENIZER, LOOKED_UP["idefics3"], model)
        mmproj = synth_media.write_media(args.kind, work / "proj", size=args.size)
        eog = eog_tokens(model)
        edge = EdgeRun(model, mmproj, args.kind, args.threads)
        servers.append(("edge-run", edge.url, edge.id, edge.stop))
        peer = start_llama_server(args.llama_server, model, threads=args.threads, slots=1, ctx=CTX, alias="peer",
                                  extra=["--mmproj", str(mmproj), "--no-repack"])  # fmt: skip
        servers.append(("llama-server", peer.url.removesuffix("/v1"), "peer", lambda: stop_process(peer.proc)))
        for _, url, model_id, _ in servers:  # every graph built once
            conversation(url, model_id, random_png(256, 64), 2, eog)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in servers}
        for r in range(args.rounds):
            png = random_png(width, height)
            for name, url, model_id, _ in servers if r % 2 == 0 else servers[::-1]:
                runs[name].append(conversation(url, model_id, png, args.tokens, eog))
                time.sleep(1)
            print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]['ttft1']:.2f}/{v[-1]['ttft2']:.2f} s"
                                                 for n, v in runs.items()), file=sys.stderr, flush=True)  # fmt: skip
    finally:
        for *_, stop in servers:
            stop()
        shutil.rmtree(work, ignore_errors=True)
    report(args, runs)


def report(args: argparse.Namespace, runs: dict[str, list[dict[str, float]]]) -> None:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    print(f"{cpu_model()}\n{DEFAULT_TOKENIZER.name} + synthetic {args.size} projector (F16, random weights), "
          f"{args.image} PNG; {args.threads} threads, 1 slot each, ctx {CTX}; llama-server --no-repack, cache_prompt; "
          f"medians of {args.rounds} rounds")  # fmt: skip
    print(f"{'server':14} {'turn 1 tokens':>13} {'TTFT 1 s':>9} {'turn 2 tokens':>13} {'TTFT 2 s':>9} {'2 / 1':>6}")
    for name in runs:
        t1, t2 = med(name, "ttft1"), med(name, "ttft2")
        print(f"{name:14} {med(name, 'prompt1'):>13.0f} {t1:>9.2f} {med(name, 'prompt2'):>13.0f} {t2:>9.2f} "
              f"{t2 / t1:>6.0%}")  # fmt: skip
    ratio = med("llama-server", "ttft1") / med("edge-run", "ttft1")
    share = med("edge-run", "ttft2") / med("edge-run", "ttft1")
    by_round = " ".join(f"{p['ttft1'] / e['ttft1']:.2f}" for e, p in zip(runs["edge-run"], runs["llama-server"],
                                                                         strict=True))  # fmt: skip
    print(f"turn 1 TTFT, llama-server ÷ edge-run: {ratio:.2f}x (target >= 1.0: {'met' if ratio >= 1 else 'NOT met'}; "
          f"by round {by_round})")  # fmt: skip
    print(f"edge-run turn 2 ÷ its turn 1: {share:.0%} (target <= 20%: {'met' if share <= 0.2 else 'NOT met'})")
    for name in runs:
        print(f"  {name} TTFT 1 / 2 by round: " + " ".join(f"{r['ttft1']:.2f}/{r['ttft2']:.2f}" for r in runs[name]))


if __name__ == "__main__":
    main()
