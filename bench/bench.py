"""edge-run benchmark: one command, one model, one thread count, printed tables.

1. ceiling: a minimal in-process llama.cpp greedy loop (one sequence, tokens/s);
2. edge-run over HTTP with streaming clients at several concurrencies;
3. optionally any other OpenAI-compatible server (``--compare URL``), with the same load;
4. multi-turn: time to first token of turn 2 of a long conversation vs turn 1.

Everything runs one after the other, never side by side: on a small machine two processes each
spinning all cores would measure the contention, not the servers.

    python bench/bench.py                      # default model, concurrency 1 4 8
    python bench/bench.py --compare http://127.0.0.1:8081/v1 --compare-model x
    python bench/bench.py --llama-server ~/llama.cpp/build/bin/llama-server   # started here, as the peer
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import shlex
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import workloads  # noqa: E402  (bench/ is sys.path[0])
from peers import LlamaServer, cpu_model, ngram_flags, start_llama_server  # noqa: E402
from sse_client import sse_events  # noqa: E402

from edge_run.config import physical_cores  # noqa: E402
from edge_run.models.catalog import load_catalog  # noqa: E402
from edge_run.models.fetch import fetch  # noqa: E402

TOPICS = ["cats", "the sea", "mountains", "bread", "trains", "music", "winter", "stars"]


def question(i: int) -> str:
    return f"Tell me one fact about {TOPICS[i % len(TOPICS)]}."


@dataclass
class StreamResult:
    tokens: int
    ttft: float
    duration: float  # first token to last token


def ceiling(model: Path, threads: int, n_tokens: int) -> tuple[float, list[int]]:
    """Greedy decoding in-process with llama.cpp's own API: the speed a server should approach."""
    import llama_cpp as L

    quiet = L.llama_log_callback(lambda *_: None)  # must outlive every llama.cpp call below
    L.llama_log_set(quiet, ctypes.c_void_p(0))
    L.llama_backend_init()
    mparams = L.llama_model_default_params()
    mparams.use_extra_bufts = False  # as edge-run loads a chat model (and on an AMX CPU, llama.cpp's AMX buffers crash)
    m = L.llama_model_load_from_file(str(model).encode(), mparams)
    vocab = L.llama_model_get_vocab(m)
    eog = [t for t in range(L.llama_vocab_n_tokens(vocab)) if L.llama_vocab_is_eog(vocab, t)]
    cparams = L.llama_context_default_params()
    cparams.n_ctx = 2048
    cparams.n_batch = 512
    cparams.n_threads = threads
    cparams.n_threads_batch = threads
    ctx = L.llama_init_from_model(m, cparams)
    prompt = b"<|im_start|>user\nTell me one fact about cats.<|im_end|>\n<|im_start|>assistant\n"
    toks = (L.llama_token * 256)()
    n = L.llama_tokenize(vocab, prompt, len(prompt), toks, 256, True, True)
    batch = L.llama_batch_get_one(toks, n)
    L.llama_decode(ctx, batch)
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    bias = (L.llama_logit_bias * len(eog))()
    for i, t in enumerate(eog):
        bias[i].token, bias[i].bias = t, -1e9
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_logit_bias(L.llama_vocab_n_tokens(vocab), len(eog), bias))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
    one = (L.llama_token * 1)()
    start = time.perf_counter()
    for _ in range(n_tokens):
        one[0] = L.llama_sampler_sample(chain, ctx, -1)
        L.llama_decode(ctx, L.llama_batch_get_one(one, 1))
    elapsed = time.perf_counter() - start
    L.llama_sampler_free(chain)
    L.llama_free(ctx)
    L.llama_model_free(m)
    del quiet
    return n_tokens / elapsed, eog


async def engine_only(model: Path, threads: int, n_tokens: int) -> float:
    """edge-run's engine driven in-process (no HTTP): separates scheduler cost from server cost."""
    from edge_run.engine import Engine, EngineOptions, SamplerSpec

    engine = Engine(
        "bench", model, EngineOptions(ctx=2048, threads=threads, gpu_layers=None, slots=1, max_queue=1, batch=512)
    )
    await engine.load()
    try:
        assert engine.model is not None
        eog = [t for t in range(engine.model.n_vocab) if engine.model.is_eog(t)]
        prompt = await engine.prompt_tokens([{"role": "user", "content": question(0)}])
        spec = SamplerSpec(temperature=0, logit_bias=tuple((t, -1e9) for t in eog))
        gen = await engine.generate(prompt, spec, max_tokens=n_tokens, stops=())
        first = last = 0.0
        async for _ in gen:
            last = time.perf_counter()
            first = first or last
        return (n_tokens - 1) / (last - first)
    finally:
        await engine.close()


async def one_stream(url: str, headers: dict[str, str], body: dict) -> StreamResult:
    start = time.monotonic()
    first = last = 0.0
    tokens = chunks = 0
    async for data in sse_events(url + "/chat/completions", headers, body):
        if data == b"[DONE]":
            continue
        chunk = msgspec.json.decode(data)
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        for choice in chunk.get("choices", []):
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("tool_calls"):  # a token of text or of a call's arguments
                chunks += 1
                now = time.monotonic()
                first = first or now
                last = now
    # servers that ignore include_usage (llama-cpp-python's) are counted by content chunks instead
    return StreamResult(tokens=tokens or chunks, ttft=first - start, duration=last - first)


def cpu_seconds(pid: int) -> float | None:
    """CPU time used so far by process ``pid``, all its threads; None where /proc cannot tell."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def settle(url: str, timeout: float = 30, pid: int | None = None) -> None:
    """Wait until an edge-run server has no background work left: an idle engine prefills the latest
    answer again, and on 2 cores that would run under the next measurement.

    Given the server's ``pid``, a server that reports stale tokens but has used under 5% of a core for
    a second has settled too: the engine leaves some stale tokens for good (a single one, today). A second,
    not less: the refresh starts half a second after the latest answer (``REFRESH_AFTER``).
    """
    health = url.removesuffix("/v1") + "/health"
    deadline = time.monotonic() + timeout
    used = cpu_seconds(pid) if pid else None
    while time.monotonic() < deadline:
        try:
            models = httpx.get(health, timeout=5).json().get("models", [])
        except (httpx.HTTPError, ValueError):
            return  # not an edge-run server
        if not any(m.get("tokens_stale") for m in models):
            return
        time.sleep(1.0 if used is not None else 0.05)
        if used is not None and pid and (now := cpu_seconds(pid)) is not None:
            if now - used < 0.05:
                return
            used = now
    print(f"note: {url} still had background work after {timeout:.0f} s; measuring on", file=sys.stderr)


def _streams(job: tuple[str, dict[str, str], list[dict], float]) -> tuple[list[StreamResult], float]:
    """One client process's share of the streams, all sent at ``start_at`` (``time.monotonic``)."""
    url, headers, bodies, start_at = job

    async def run() -> list[StreamResult]:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        return await asyncio.gather(*(one_stream(url, headers, b) for b in bodies))

    results = asyncio.run(run())
    return results, time.monotonic()


async def load(
    url: str, key: str, model: str, concurrency: int, max_tokens: int, eog: list[int], clients: Any = None
) -> dict:
    """``concurrency`` streams at once; with a pool of ``clients`` processes, split among them (a fast
    GPU server outruns one Python process parsing its events)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    bodies = [
        {
            "model": model,
            "messages": [{"role": "user", "content": f"Tell me one fact about {TOPICS[i % len(TOPICS)]}."}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
            "logit_bias": {str(t): -100 for t in eog},
        }
        for i in range(concurrency)
    ]
    if clients is not None and concurrency >= 8:
        n = clients._processes
        start_at = time.monotonic() + 0.2
        parts = clients.map(_streams, [(url, headers, bodies[i::n], start_at) for i in range(n) if bodies[i::n]])
        results = [r for rs, _ in parts for r in rs]
        wall = max(end for _, end in parts) - start_at
    else:
        start = time.monotonic()
        results = await asyncio.gather(*(one_stream(url, headers, b) for b in bodies))
        wall = time.monotonic() - start
    total = sum(r.tokens for r in results)
    return {
        "aggregate": total / wall,
        "per_stream": statistics.median((r.tokens - 1) / r.duration for r in results if r.duration > 0),
        "ttft": statistics.median(r.ttft for r in results),
        "complete": all(r.tokens == max_tokens for r in results),
    }


async def multi_turn(url: str, key: str, model: str, salt: int) -> tuple[float, float, int]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    # the salt opens the conversation, so no earlier round's cache can serve turn 1
    history = [{"role": "system", "content": f"Session {salt}. You are a patient teacher. " + "Facts matter. " * 40}]
    for i in range(6):
        history += [
            {"role": "user", "content": f"Question {i}: tell me about {TOPICS[i]} in detail, please."},
            {"role": "assistant", "content": f"Here is what I know about {TOPICS[i]}. " * 8},
        ]
    history.append({"role": "user", "content": "Summarize everything."})
    body = {"model": model, "messages": history, "max_tokens": 32, "temperature": 0, "stream": True}
    async with httpx.AsyncClient(headers=headers, timeout=600) as client:
        first = await one_stream(url, headers, {**body, "stream_options": {"include_usage": True}})
        r = await client.post(url + "/chat/completions", json={**body, "stream": False})
        reply = r.json()
        prompt_tokens = reply["usage"]["prompt_tokens"]
        history += [
            {"role": "assistant", "content": reply["choices"][0]["message"]["content"]},
            {"role": "user", "content": "Thanks. One more detail?"},
        ]
        await asyncio.to_thread(settle, url)  # a person reads the answer before asking again
        second = await one_stream(url, headers, {**body, "messages": history})
    return first.ttft, second.ttft, prompt_tokens


async def prefill(url: str, key: str, model: str, salt: str, words: int) -> tuple[float, int]:
    """Time to the first token of one long prompt that no cache holds: prompt processing speed."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    vocab = ["apple", "river", "stone", "green", "quick", "house", "light", "music", "paper", "cloud", "horse"]
    text = " ".join(vocab[(i * 7 + i // 11) % len(vocab)] for i in range(words))
    body = {
        "model": model,
        "messages": [{"role": "user", "content": f"Run {salt}. Count the words: {text}"}],
        "max_tokens": 2,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.monotonic()
    first, prompt_tokens = 0.0, 0
    async for data in sse_events(url + "/chat/completions", headers, body):
        if data == b"[DONE]":
            continue
        chunk = msgspec.json.decode(data)
        # the first token, not a first event that only names the role (sent before the prompt is read)
        if any(c["delta"].get("content") or c.get("finish_reason") for c in chunk.get("choices", [])):
            first = first or time.monotonic()
        if chunk.get("usage"):
            prompt_tokens = chunk["usage"]["prompt_tokens"]
    return first - start, prompt_tokens


def start_server(
    model: Path, threads: int, slots: int, ctx: int, *extra: str
) -> tuple[subprocess.Popen, str, str, Path]:
    home = Path(tempfile.mkdtemp(prefix="edge-run-bench-"))
    env = {**os.environ, "EDGE_RUN_HOME": str(home)}
    key = subprocess.run(
        [sys.executable, "-m", "edge_run", "keys", "create"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    port = 18000 + os.getpid() % 1000 + len(extra)
    args = ["serve", "--model", str(model), "--port", str(port), "--threads", str(threads)]
    args += ["--slots", str(slots), "--ctx", str(ctx), *extra]
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_run", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url)
    return proc, url + "/v1", key, home


def wait_healthy(url: str, timeout: float = 60, proc: subprocess.Popen | None = None) -> None:
    """Until ``url``'s ``/health`` answers 200 (the server's preloads are done); RuntimeError after ``timeout``,
    or as soon as ``proc``, the server's process if given, has exited (it is killed on a timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (proc is None or proc.poll() is None):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    if proc is not None:
        proc.kill()
    exited = "" if proc is None else f"; its process exited with {proc.poll()}"
    raise RuntimeError(f"{url} was not healthy within {timeout:.0f} s{exited}")


def run_part(name: str, model: Path, threads: int, max_tokens: int) -> dict:
    """One in-process measurement (``--part``) in a fresh process; its JSON result."""
    cmd = [sys.executable, __file__, "--part", name, "--model", str(model), "--threads", str(threads)]
    out = subprocess.run([*cmd, "--max-tokens", str(max_tokens)], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run_scenario(args: argparse.Namespace, model: Path) -> None:
    import scenarios

    extra = [("edge-run --threads 1", ("--threads", "1"))] if args.scenario == "contention" else []
    procs, targets = [], []
    try:
        for name, flags in [("edge-run", ()), *extra]:
            proc, url, key, _ = start_server(model, args.threads, 4, args.ctx, *flags)
            procs.append(proc)
            targets.append((name, url, key, model.stem))
        targets += [(o, o, args.compare_key, args.compare_model) for o in args.compare]
        eog = run_part("ceiling", model, args.threads, 8)["eog"]
        for _, u, k, m in targets:
            asyncio.run(load(u, k, m, 1, 8, eog))  # warm-up
            settle(u)
        if args.scenario == "grammar":
            scenarios.grammar(targets, args.rounds, args.max_tokens, one_stream, settle)
        else:

            def rate(target: tuple[str, str, str, str]) -> float:
                _, u, k, m = target
                return float(asyncio.run(load(u, k, m, 1, args.max_tokens, eog))["per_stream"])

            scenarios.contention(targets, args.rounds, args.contention, rate, settle)
    finally:
        for p in procs:
            p.terminate()
            p.wait()


def start_peers(args: argparse.Namespace, model: Path, ctx: int, started: list[tuple[str, LlamaServer]]) -> None:
    """llama-server with one slot of ``ctx`` tokens, and for ``repeats`` a second one with n-gram drafting."""
    variants: list[tuple[str, list[str]]] = [("llama-server", [])]
    if args.scenario == "repeats":
        flags, note = ngram_flags(args.llama_server)
        print(f"llama-server drafting: {note}")
        if flags:
            variants.append((f"llama-server {flags[-1]}", flags))
    for name, extra in variants:
        peer = start_llama_server(
            args.llama_server, model, threads=args.threads, slots=1, ctx=ctx, alias=model.stem, extra=extra
        )
        started.append((name, peer))
        print(f"{name} is llama-server {' '.join(peer.flags[2:])} ({peer.note})")


def run_workload(args: argparse.Namespace, model: Path) -> None:
    """One of workloads.py's scenarios: edge-run and every peer with one slot, as much context as it needs."""
    args.answer_tokens = args.answer_tokens or {"conversation": 100, "repeats": 400}.get(args.scenario, 1)
    need = workloads.context_needed(args.scenario, args.sizes, args.turns, args.turn_tokens, args.answer_tokens)
    ctx = max(args.ctx, need)
    print(f"{cpu_model()}\nmodel {model.name}, {args.threads} threads, one slot of {ctx} tokens on every server")
    eog = run_part("ceiling", model, args.threads, 8)["eog"]
    variants: list[tuple[str, tuple[str, ...]]] = [("edge-run", ())]
    if args.scenario == "repeats" and args.no_draft_flags:
        variants.append((workloads.NO_DRAFT, tuple(shlex.split(args.no_draft_flags))))
    procs: list[subprocess.Popen] = []
    peers: list[tuple[str, LlamaServer]] = []
    try:
        targets = []
        for name, flags in variants:
            proc, url, key, _ = start_server(model, args.threads, 1, ctx, *flags)
            procs.append(proc)
            targets.append((name, url, key, model.stem))
            print(f"{name} is edge-run serve --slots 1 --ctx {ctx} --threads {args.threads} {' '.join(flags)}")
        if args.llama_server:
            start_peers(args, model, ctx, peers)
        targets += [(name, peer.url, "", model.stem) for name, peer in peers]
        targets += [(o, o, args.compare_key, args.compare_model) for o in args.compare]
        print()
        pids = {t[1]: p.pid for t, p in zip(targets, procs, strict=False)}  # edge-run servers come first

        def wait(u: str) -> None:  # a long prompt's refresh can take minutes today: wait it out, never measure over it
            settle(u, timeout=900, pid=pids.get(u))

        for _, u, k, m in targets:
            asyncio.run(load(u, k, m, 1, 8, eog))  # warm-up
            wait(u)
        workloads.run(args.scenario, targets, args, eog, wait)
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        for _, peer in peers:
            peer.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="GGUF to use (default: the catalog default, fetched if needed)")
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=2048, help="context per slot for edge-run")
    ap.add_argument("--compare", action="append", default=[], help="another OpenAI-compatible base URL")
    ap.add_argument("--llama-server", type=Path, help="a llama-server binary to start and compare against")
    ap.add_argument("--compare-model", default="default", help="model name to send to --compare servers")
    ap.add_argument("--compare-key", default="", help="bearer key for --compare servers")
    ap.add_argument("--rounds", type=int, default=5, help="repeat each measurement; medians are shown")
    ap.add_argument("--prompt-words", type=int, default=400, help="words in the prompt-processing test (0: skip)")
    ap.add_argument("--client-procs", type=int, default=1, help="client processes for 8 or more streams")
    ap.add_argument("--scenario", choices=["grammar", "contention", *workloads.NAMES],
                    help="run only this scenario (bench/scenarios.py, bench/workloads.py)")  # fmt: skip
    ap.add_argument("--contention", type=int, default=1, help="CPU-bound processes beside the contention scenario")
    ap.add_argument("--sizes", type=int, nargs="+", default=[700, 3000, 8000], help="long-prompts: prompt tokens")
    ap.add_argument("--turns", type=int, default=12, help="conversation: turns")
    ap.add_argument("--turn-tokens", type=int, default=150, help="conversation: user tokens each turn adds")
    ap.add_argument("--answer-tokens", type=int, help="conversation and repeats: tokens per answer (100, 400)")
    ap.add_argument("--pause", type=float, default=0.0, help="conversation: seconds from an answer to the next turn")
    ap.add_argument("--no-draft-flags", help="repeats: serve flags that turn drafting off, for a second edge-run")
    ap.add_argument("--part", choices=["ceiling", "engine"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        # one in-process measurement per fresh process: a llama.cpp thread team left by an earlier run
        # on another thread halves the next one's speed (seen with the OpenMP build)
        if args.part == "ceiling":
            rate, eog = ceiling(args.model, args.threads, args.max_tokens)
        else:
            rate, eog = asyncio.run(engine_only(args.model, args.threads, args.max_tokens)), []
        print(json.dumps({"rate": rate, "eog": eog}))
        return

    model = args.model or fetch(load_catalog().default_entry, Path.home() / ".cache" / "edge-run-tests")
    if args.scenario in workloads.NAMES:
        run_workload(args, model)
        return
    print(
        f"{cpu_model()}\nmodel {model.name}, {args.threads} threads, {args.max_tokens} tokens per stream, "
        f"EOS banned, median of {args.rounds} rounds"
    )
    peer = None
    if args.llama_server:
        peer = start_llama_server(args.llama_server, model, threads=args.threads, slots=max(args.concurrency),
                                  ctx=args.ctx, alias=model.stem)  # fmt: skip
        args.compare.append(peer.url)
        args.compare_model = model.stem
        print(f"{peer.url} is llama-server {' '.join(peer.flags[2:])} ({peer.note})")
    print()

    if args.scenario:
        run_scenario(args, model)
        return

    def part(name: str) -> dict:
        return run_part(name, model, args.threads, args.max_tokens)

    # Every measurement runs --rounds times, round-robin over the targets so that a noisy moment on
    # this machine hits all of them alike. The first table shows medians; the second pairs each round's
    # edge-run number with the other target's number measured just before or after, which cancels
    # the slow drift of a shared machine.
    eog = part("ceiling")["eog"]
    clients = None
    if args.client_procs > 1:
        import multiprocessing

        clients = multiprocessing.get_context("fork").Pool(args.client_procs)
    proc, url, key, _ = start_server(model, args.threads, max(args.concurrency), args.ctx)
    procs = [proc]
    try:
        targets = [("edge-run", url, key, model.stem)] + [
            (o, o, args.compare_key, args.compare_model) for o in args.compare
        ]
        for _, u, k, m in targets:
            asyncio.run(load(u, k, m, 1, 8, eog))  # warm-up
            settle(u)
        ceilings, engines = [], []
        results: dict[tuple[str, int], list[dict]] = {}
        prefills: dict[str, list[tuple[float, int]]] = {}
        for r in range(args.rounds):
            ceilings.append(part("ceiling")["rate"])
            engines.append(part("engine")["rate"])
            for c in args.concurrency:  # the servers back to back at each concurrency: a fair pairing
                for name, u, k, m in targets:
                    res = asyncio.run(load(u, k, m, c, args.max_tokens, eog, clients))
                    results.setdefault((name, c), []).append(res)
                    settle(u)
            for name, u, k, m in targets if args.prompt_words else []:
                # a salt that no earlier run can have cached (a peer server outlives a bench run)
                salt = f"{os.getpid()}-{r}"
                prefills.setdefault(name, []).append(asyncio.run(prefill(u, k, m, salt, args.prompt_words)))
                settle(u)
        turns = [asyncio.run(multi_turn(url, key, model.stem, salt)) for salt in range(args.rounds)]
        settle(url)
        t1, t2 = statistics.median(t[0] for t in turns), statistics.median(t[1] for t in turns)
        n_prompt = turns[0][2]
    finally:
        for p in procs:
            p.terminate()
            p.wait()
        if peer is not None:
            peer.stop()
        if clients is not None:
            clients.terminate()

    rate, inproc = statistics.median(ceilings), statistics.median(engines)
    rows = [("llama.cpp in-process greedy loop", 1, rate, rate, float("nan"), True)]
    rows.append(("edge-run engine in-process (no HTTP)", 1, inproc, inproc, float("nan"), True))
    for (name, c), runs in results.items():
        med = {f: statistics.median(r[f] for r in runs) for f in ("aggregate", "per_stream", "ttft")}
        rows.append((name, c, med["aggregate"], med["per_stream"], med["ttft"], all(r["complete"] for r in runs)))

    # single stream against the ceiling: both are decode speed, first token to last
    paired = [("engine in-process ÷ ceiling", [e / c for e, c in zip(engines, ceilings, strict=True)])]
    if 1 in args.concurrency:
        single = [r["per_stream"] for r in results[("edge-run", 1)]]
        paired.append(("edge-run 1 stream ÷ ceiling", [s / c for s, c in zip(single, ceilings, strict=True)]))
    for other in args.compare:
        for c in args.concurrency:
            mine, theirs = results[("edge-run", c)], results[(other, c)]
            ratios = [a["aggregate"] / b["aggregate"] for a, b in zip(mine, theirs, strict=True)]
            paired.append((f"edge-run ÷ {other} at {c}", ratios))
            ttfts = [a["ttft"] / b["ttft"] for a, b in zip(mine, theirs, strict=True)]
            paired.append((f"TTFT edge-run ÷ {other} at {c}", ttfts))
        if other in prefills:
            ratios = [a[0] / b[0] for a, b in zip(prefills["edge-run"], prefills[other], strict=True)]
            paired.append((f"prompt TTFT edge-run ÷ {other}", ratios))

    print(
        f"{'server':40} {'conc':>4} {'agg tok/s':>10} {'stream tok/s':>12} {'TTFT ms':>8} {'vs ceiling':>10} complete"
    )
    for name, c, agg, per, ttft, complete in rows:
        ttft_ms = "-" if ttft != ttft else f"{ttft * 1000:.0f}"
        print(f"{name[:40]:40} {c:>4} {agg:>10.1f} {per:>12.1f} {ttft_ms:>8} {agg / rate:>9.2f}x {complete}")
    print(f"\n{'paired by round (tok/s ratio)':56} {'median':>7}  rounds")
    for label, ratios in paired:
        print(f"{label[:56]:56} {statistics.median(ratios):>6.2f}x  {' '.join(f'{r:.2f}' for r in ratios)}")
    for name, runs in prefills.items():
        ttft = statistics.median(t for t, _ in runs)
        n = runs[0][1]
        rate_text = f", {n / ttft:.0f} tokens/s" if n else ""
        print(f"prompt processing, {name}: {n} prompt tokens, TTFT {ttft * 1000:.0f} ms{rate_text}")
    print(
        f"\nmulti-turn ({n_prompt} prompt tokens of history): TTFT turn 1 {t1 * 1000:.0f} ms, "
        f"turn 2 {t2 * 1000:.0f} ms ({t2 / t1:.0%} of turn 1)"
    )


if __name__ == "__main__":
    main()
