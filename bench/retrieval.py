"""Retrieval throughput: edge-run against llama-server on the same embedding and reranker files, in one run.

    flock /tmp/edge-run-cpu.lock .venv/bin/python bench/retrieval.py --llama-server PATH [--rounds 3] [--check]

- **Documents.** 200 fixed sentences of 8-60 words (seeded RNG over ``workload_texts.WORDS``).
- **Embeddings** (``embed-cls``: BERT, CLS pooling; ``embed-last``: Qwen3-style decoder, last-token pooling):
  ``--docs`` documents (1000) sent as consecutive requests of 32 or 256 inputs, the 200 documents taken round
  robin; documents/s is ``--docs`` over the wall time. One client, then two clients sharing the requests.
- **Rerank** (``rerank``: a BERT cross-encoder): one query against the documents in requests of 50 and 200.
- **Pairing.** Every server is started once per model and warmed up with one request; each round measures
  every scenario on every server back to back (the order reversed every other round), as users send requests:
  nothing sleeps between them. A ratio is edge-run ÷ the best llama-server setting in the same round; the
  table shows medians over ``--rounds``.
- **Peers.** llama-server with its defaults and with tuned ``-np``/``-b``/``-ub`` (``--peer-flags`` replaces
  the tuned sets). The best setting per scenario, by median, is the baseline; every setting's numbers print.
- ``--check``: cosine distance between the two servers' vectors and the largest rerank score difference.
- ``--latency N``: each server's median time for one request (one client), N requests sent to the servers in
  turn, so that none gets its next request right after its own answer.
- The ``stall`` scenario (``retrieval_stall.py``): edge-run's chat model streaming while an embedding burst
  runs on the same model.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec
import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

from peers import _free_port, cpu_model, stop_process  # noqa: E402
from workload_texts import WORDS  # noqa: E402

from bench import wait_healthy  # noqa: E402

DEFAULT_LS = Path("/work/peer/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server")
KINDS = ("embed-cls", "embed-last", "rerank")
MODE = {"embed-cls": ["--embedding", "--pooling", "cls"], "embed-last": ["--embedding", "--pooling", "last"],
        "rerank": ["--reranking"], "chat": ["--embedding"]}  # fmt: skip
TUNED = ["-np 8 -b 2048 -ub 2048", "-np 16 -b 2048 -ub 2048"]
CHAT_MODEL = Path.home() / ".cache/edge-run-tests/SmolLM2-135M-Instruct.Q4_1.gguf"
QUERY = "which river runs past the old stone house in the green valley"


def documents(n: int = 200, seed: int = 0) -> list[str]:
    """``n`` fixed sentences of 8 to 60 words."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 60))).capitalize() + "." for _ in range(n)]


DOCS = documents()


@dataclass
class Server:
    name: str
    url: str
    model: str
    proc: subprocess.Popen[bytes]
    flags: str
    home: Path | None = None

    def stop(self) -> None:
        stop_process(self.proc)
        if self.home:
            shutil.rmtree(self.home, ignore_errors=True)


def start_edge_run(model_id: str, path: Path, threads: int, *extra: str) -> Server:
    """``edge-run serve --no-auth`` with one ``[[model]]`` (preloaded, never unloaded)."""
    home = Path(tempfile.mkdtemp(prefix="edge-run-retrieval-"))
    (home / "config").mkdir()
    (home / "config" / "config.toml").write_text(f'[[model]]\nid = "{model_id}"\npath = "{path}"\n')
    port = _free_port()
    flags = ["--no-auth", "--port", str(port), "--threads", str(threads), "--model", model_id, "--keep-alive", "-1"]
    flags += extra
    proc = subprocess.Popen([sys.executable, "-m", "edge_run", "serve", *flags], cwd=ROOT,
                            env={**os.environ, "EDGE_RUN_HOME": str(home)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, 120, proc)
    return Server("edge-run", url, model_id, proc, "edge-run serve " + " ".join(flags), home)


def start_peer(binary: Path, kind: str, path: Path, threads: int, tuned: str) -> Server:
    """llama-server serving ``path`` as ``kind`` with ``tuned``; where that load dies at its warm-up or first request
    (on an AMX CPU, llama.cpp's AMX buffers crash a quantized model's first decode), with ``--no-repack`` added."""
    for load in ([], ["--no-repack"]):
        last = bool(load) or "--no-repack" in tuned
        port = _free_port()
        flags = ["-m", str(path), "--alias", kind, "--host", "127.0.0.1", "--port", str(port), "-t", str(threads),
                 "--no-webui", *MODE[kind], *tuned.split(), *load]  # fmt: skip
        proc = subprocess.Popen([str(binary), *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, 120, proc)
        except RuntimeError:
            if last:
                raise
            continue
        if last or _serves(url, kind):
            return Server(f"llama-server {tuned or 'defaults'}", url, kind, proc, "llama-server " + " ".join(flags[4:]))
        stop_process(proc)
    raise AssertionError("unreachable: the second load returns or raises")


def _serves(url: str, kind: str) -> bool:
    """Whether a llama-server answers a first request of two inputs (and is still running)."""
    body: dict = {"model": kind, "input": ["the cat sat on the mat", "hello world"]}
    if kind == "rerank":
        body = {"model": kind, "query": "a cat", "documents": ["the cat sat on the mat", "hello world"]}
    route = "rerank" if kind == "rerank" else "embeddings"
    try:
        return httpx.post(f"{url}/v1/{route}", json=body, timeout=60).is_success
    except httpx.HTTPError:
        return False


def ensure_models(folder: Path | None) -> dict[str, Path]:
    """The three synthetic models in ``folder`` (written there by synth.py where missing)."""
    folder = folder or Path(tempfile.mkdtemp(prefix="retrieval-models-"))
    out = {}
    for kind in KINDS:
        path = folder / f"synth-{kind}.gguf"
        if not path.exists():
            cmd = [sys.executable, str(BENCH / "synth.py"), kind, "--out", str(folder)]
            path = Path(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip())
        out[kind] = path
    return out


@dataclass(frozen=True)
class Scenario:
    kind: str
    batch: int
    clients: int

    @property
    def label(self) -> str:
        what = "rerank" if self.kind == "rerank" else self.kind
        return f"{what}, {self.batch} per request, {self.clients} client{'s' * (self.clients > 1)}"


def request_body(server: Server, kind: str, docs: list[str], encoding: str) -> tuple[str, dict]:
    if kind == "rerank":
        return "/v1/rerank", {"model": server.model, "query": QUERY, "documents": docs, "top_n": len(docs)}
    return "/v1/embeddings", {"model": server.model, "input": docs, "encoding_format": encoding}


async def ask(http: httpx.AsyncClient, server: Server, kind: str, docs: list[str], encoding: str) -> None:
    """One request for ``docs``; raises unless it is answered with one result per document."""
    path, body = request_body(server, kind, docs, encoding)
    r = await http.post(server.url + path, content=msgspec.json.encode(body),
                        headers={"Content-Type": "application/json"})  # fmt: skip
    if r.status_code != 200:
        raise RuntimeError(f"{server.name}: {r.status_code} {r.text[:300]}")
    reply = msgspec.json.decode(r.content)
    n = len(reply["results"] if kind == "rerank" else reply["data"])
    if n != len(docs):
        raise RuntimeError(f"{server.name}: {n} answers for {len(docs)} documents")


async def throughput(server: Server, sc: Scenario, total: int, encoding: str) -> float:
    """Documents/s: ``total`` documents in requests of ``sc.batch``, sent back to back by ``sc.clients`` clients."""
    starts = list(range(0, total, sc.batch))
    queue = iter(starts)

    async def client(http: httpx.AsyncClient) -> None:
        for start in queue:  # the clients share one iterator: each takes the next request
            docs = [DOCS[(start + j) % len(DOCS)] for j in range(min(sc.batch, total - start))]
            await ask(http, server, sc.kind, docs, encoding)

    https = [httpx.AsyncClient(timeout=600) for _ in range(sc.clients)]
    try:
        begin = time.perf_counter()
        await asyncio.gather(*(client(h) for h in https))
        return total / (time.perf_counter() - begin)
    finally:
        for h in https:
            await h.aclose()


async def latencies(servers: list[Server], sc: Scenario, n: int, encoding: str) -> dict[str, float]:
    """Median time of one request of ``sc.batch`` documents per server: ``n`` requests each, sent to the
    servers in turn (one client), so that a server never gets the next request right after its own answer."""
    times: dict[str, list[float]] = {s.name: [] for s in servers}
    https = {s.name: httpx.AsyncClient(timeout=600) for s in servers}
    try:
        for i in range(n):
            docs = [DOCS[(i * sc.batch + j) % len(DOCS)] for j in range(sc.batch)]
            for s in servers:
                begin = time.perf_counter()
                await ask(https[s.name], s, sc.kind, docs, encoding)
                times[s.name].append(time.perf_counter() - begin)
        return {name: statistics.median(t) for name, t in times.items()}
    finally:
        for h in https.values():
            await h.aclose()


@dataclass
class Results:
    """docs/s per (scenario label, server name), one entry per round."""

    rates: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)

    def add(self, label: str, name: str, rate: float) -> None:
        self.rates.setdefault((label, name), []).append(rate)


def measure_kind(args: argparse.Namespace, kind: str, path: Path, scenarios: list[Scenario], res: Results) -> None:
    """Start edge-run and every llama-server setting on ``path``, warm each up, then the paired rounds."""
    servers: list[Server] = []
    try:
        servers.append(start_edge_run(kind, path, args.threads))
        for tuned in args.peer_flags:
            servers.append(start_peer(args.llama_server, kind, path, args.threads, tuned))
        print(f"{kind}: {path}")
        for s in servers:
            res.flags[s.name] = s.flags
            print(f"{kind}: {s.flags}")
            asyncio.run(throughput(s, Scenario(kind, max(x.batch for x in scenarios), 1), 256, args.encoding))
        for r in range(args.rounds):
            order = servers if r % 2 == 0 else servers[::-1]
            for sc in scenarios:
                for s in order:
                    res.add(sc.label, s.name, asyncio.run(throughput(s, sc, args.docs, args.encoding)))
            print(f"  {kind}: round {r + 1}/{args.rounds} done", file=sys.stderr)
        if args.latency:
            for sc in scenarios:
                if sc.clients == 1:
                    ms = asyncio.run(latencies(servers, sc, args.latency, args.encoding))
                    print(f"latency {sc.label}, median of {args.latency} sent in turn: "
                          + ", ".join(f"{name} {t * 1000:.1f} ms" for name, t in ms.items()))  # fmt: skip
        if args.check:
            check(kind, servers[0], servers[1:])
    finally:
        for s in servers:
            s.stop()


def fetch(server: Server, kind: str, docs: list[str]) -> np.ndarray:
    path, body = request_body(server, kind, docs, "float")
    reply = httpx.post(server.url + path, json=body, timeout=120).json()
    if kind == "rerank":
        scores = np.zeros(len(docs))
        for item in reply["results"]:
            scores[item["index"]] = item["relevance_score"]
        return scores
    return np.array([d["embedding"] for d in sorted(reply["data"], key=lambda d: d["index"])])


def check(kind: str, mine: Server, peers: list[Server]) -> None:
    """edge-run's vectors (cosine distance) or scores (|Δ|) against each llama-server setting's, 8 documents."""
    docs = DOCS[:8]
    a = fetch(mine, kind, docs)
    for peer in peers:
        b = fetch(peer, kind, docs)
        if kind == "rerank":
            same = bool((np.argsort(-a) == np.argsort(-b)).all())
            print(f"check {kind} vs {peer.name}: max |Δscore| {np.abs(a - b).max():.2e}, "
                  f"scores {a.min():.4f}..{a.max():.4f}, same order {same}")  # fmt: skip
            continue
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        dist = " ".join(f"{1 - c:.1e}" for c in cos)
        print(f"check {kind} vs {peer.name}: dim {a.shape[1]}, cosine distance per vector {dist}")


def scenarios_for(kind: str, args: argparse.Namespace) -> list[Scenario]:
    sizes = args.rerank_batches if kind == "rerank" else args.batches
    return [Scenario(kind, b, c) for c in args.clients for b in sizes]


def report(args: argparse.Namespace, res: Results, labels: list[str]) -> None:
    peers = [n for n in res.flags if n != "edge-run"]
    print(f"\n{'scenario':44} {'edge-run':>9} {'llama-server':>12} {'ratio':>6}  rounds   (docs/s, median of "
          f"{args.rounds}; llama-server: its best setting)")  # fmt: skip
    slower = []
    for label in labels:
        mine = res.rates[(label, "edge-run")]
        best = max(peers, key=lambda p: statistics.median(res.rates[(label, p)]))
        theirs = res.rates[(label, best)]
        ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
        ratio = statistics.median(ratios)
        print(f"{label:44} {statistics.median(mine):>9.0f} {statistics.median(theirs):>12.0f} {ratio:>5.2f}x  "
              f"{' '.join(f'{x:.2f}' for x in ratios)}  [{best.removeprefix('llama-server ')}]")  # fmt: skip
        if ratio < 1:
            slower.append((label, ratio))
    print(f"\nevery llama-server setting, docs/s (median of {args.rounds}):")
    print(f"{'scenario':44} " + " ".join(f"{p.removeprefix('llama-server '):>24}" for p in peers))
    for label in labels:
        print(f"{label:44} " + " ".join(f"{statistics.median(res.rates[(label, p)]):>24.0f}" for p in peers))
    for label, ratio in slower:
        print(f"edge-run is {1 - ratio:.0%} slower than llama-server's best: {label}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--llama-server", type=Path, default=DEFAULT_LS, help="the peer binary")
    ap.add_argument("--models", type=Path, help="a folder of synth-KIND.gguf files (written there where absent)")
    ap.add_argument("--kinds", nargs="+", choices=[*KINDS, "stall"], default=[*KINDS, "stall"])
    ap.add_argument("--rounds", type=int, help="paired rounds (3; --quick: 1)")
    ap.add_argument("--threads", type=int, default=2, help="every server's threads")
    ap.add_argument("--docs", type=int, help="documents per measurement (1000; --quick: 400)")
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 256], help="embedding inputs per request")
    ap.add_argument("--rerank-batches", type=int, nargs="+", default=[50, 200], help="documents per rerank request")
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2], help="concurrent clients")
    ap.add_argument("--encoding", choices=["float", "base64"], default="float", help="embeddings' encoding_format")
    ap.add_argument("--peer-flags", action="append", help="a llama-server setting, repeatable ('': its defaults; "
                    "flags that start with - as --peer-flags=--no-repack)")  # fmt: skip
    ap.add_argument("--check", action="store_true", help="compare vectors and scores with llama-server's")
    ap.add_argument(
        "--latency",
        type=int,
        default=0,
        metavar="N",
        help="also each server's median time for one request, N requests sent to the servers in turn",
    )
    ap.add_argument("--quick", action="store_true", help="1 round, 400 documents, 1 client (unless given)")
    ap.add_argument("--chat-model", type=Path, default=CHAT_MODEL, help="stall: the chat model")
    args = ap.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.docs = args.docs or (400 if args.quick else 1000)
    args.clients = [1] if args.quick and "--clients" not in sys.argv else args.clients
    args.peer_flags = args.peer_flags if args.peer_flags is not None else ["", *TUNED]
    print(f"{cpu_model()}\n{args.threads} threads on every server, {len(DOCS)} documents "
          f"({sum(len(d.split()) for d in DOCS)} words), {args.docs} per measurement, {args.encoding} vectors, "
          f"median of {args.rounds} rounds")  # fmt: skip
    models = ensure_models(args.models) if set(args.kinds) & set(KINDS) else {}
    res, labels = Results(), []
    for kind in [k for k in KINDS if k in args.kinds]:
        scenarios = scenarios_for(kind, args)
        labels += [s.label for s in scenarios]
        measure_kind(args, kind, models[kind], scenarios, res)
    if labels:
        report(args, res, labels)
    if "stall" in args.kinds:
        from retrieval_stall import stall

        stall(args, lambda path, *extra: start_edge_run("chat", path, args.threads, *extra), DOCS)


if __name__ == "__main__":
    main()
