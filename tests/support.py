"""Helpers for the integration tests (no tests here): real edge-run servers on loopback, the CLI as a user
runs it, and waiting on a server with a deadline instead of a fixed sleep.

The fixtures that use them are in ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

__all__ = [
    "MODEL_ID",
    "Server",
    "browser_recorder",
    "cache_dir",
    "free_port",
    "isolated_python",
    "run_cli",
    "set_up",
    "share_of_cores",
    "start_server",
    "stream_in_slot_order",
    "usage_by",
    "wait_for",
    "wait_healthy",
]

MODEL_ID = "u-8105f7322477/test"

T = TypeVar("T")


def cache_dir() -> Path:
    """Where the test models are kept between runs: ``$EDGE_RUN_TEST_CACHE`` or ``~/.cache/edge-run-tests``."""
    return Path(os.environ.get("EDGE_RUN_TEST_CACHE", Path.home() / ".cache" / "edge-run-tests"))


def isolated_python(name: str, *requirements: str) -> Path:
    """A Python with ``requirements`` in a venv of its own, kept in the test cache (made once, from the package
    index), for a client that cannot share the test venv: the Agents SDK's ``mcp`` brings ``python-multipart``,
    whose ``multipart`` shim would replace the ``multipart`` Litestar imports."""
    root = cache_dir() / "venvs" / name
    python = root / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    ready = root / "ready"
    if not ready.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(root)], check=True)
        constraints = Path(__file__).resolve().parents[1] / "constraints.txt"  # the shared ones: openai, httpx...
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-c", str(constraints), *requirements], check=True)
        ready.write_text(" ".join(requirements))
    return python


def oracle_llama(path: Path, **kwargs: Any) -> Any:
    """llama-cpp-python's high-level ``Llama`` on ``path``, its weights loaded as edge-run loads a model that never
    generates: in llama.cpp's extra CPU buffer types, but not AMX's, which crash (``amx_built``)."""
    import llama_cpp
    import llama_cpp.llama_cpp as capi

    from edge_run.engine.llama.backend import amx_built

    default = capi.llama_model_default_params

    def params() -> Any:
        chosen = default()
        chosen.use_extra_bufts = not amx_built()
        return chosen

    capi.llama_model_default_params = params  # what Llama calls; it has no option for it
    try:
        return llama_cpp.Llama(model_path=str(path), **kwargs)
    finally:
        capi.llama_model_default_params = default


def share_of_cores() -> int:
    """The threads a test's own engine may take: its pytest-xdist worker's share of the cores (``EDGE_RUN_THREADS``,
    set by ``tests/conftest.py``), or all of them in a run on one process."""
    from edge_run.config import physical_cores

    return int(os.environ.get("EDGE_RUN_THREADS") or physical_cores())


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


def set_up(home: Path, *args: str) -> str:
    """``edge-run ARGS`` for a fixture's set-up (add a model, create a key), in this process through click's
    runner: the same command code without a fresh interpreter per step. Returns its stdout; fails on an error.
    What a test checks of the command line runs as the user runs it: ``run_cli``, a process of its own."""
    from click.testing import CliRunner

    from edge_run.cli import main

    result = CliRunner().invoke(main, list(args), env={"EDGE_RUN_HOME": str(home)}, catch_exceptions=False)
    assert result.exit_code == 0, f"edge-run {' '.join(args)} exited {result.exit_code}: {result.output}"
    return result.stdout


def wait_for(check: Callable[[], T], timeout: float, what: str, every: float = 0.05) -> T:
    """Polls ``check`` until it returns something true and returns that; fails naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s (last: {result!r})")
        time.sleep(every)
    return result


@dataclass
class Server:
    """A running ``edge-run serve``: its home, port and key, its process and log; ``extra`` holds what its
    fixture adds (another key, a file to look at)."""

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
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"server exited with {server.proc.returncode}:\n{server.log.read_text()[-4000:]}")
            try:
                if http.get(server.url + "/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
    raise RuntimeError(f"server not healthy after {timeout}s:\n{server.log.read_text()[-4000:]}")


def _expect_offloaded(server: Server, timeout: float = 300.0) -> None:
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
        key = set_up(home, "keys", "create", "--name", f"test-{time.monotonic_ns()}").strip()
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
        _expect_offloaded(server)
    except Exception:
        server.stop()
        raise
    return server


def usage_by(server: Server, by: str, key_name: str) -> dict[str, list[int]]:
    """``edge-run keys usage --key NAME --by BY``: each group's requests, prompt, completion, cached and total
    tokens, as written to the key database so far (the server writes usage about once a second)."""
    out = run_cli(server.home, "keys", "usage", "--key", key_name, "--by", by).stdout.splitlines()
    rows = (line.split() for line in out[1:] if line.strip() and not line.startswith("total"))
    return {row[0]: [int(n) for n in row[1:6]] for row in rows}


def browser_recorder(folder: Path) -> tuple[Path, Path]:
    """A fake browser for ``EDGE_RUN_BROWSER``: a script that appends the URL it is given to a file.
    Returns the script and that file (which exists once something was opened)."""
    record = folder / "opened.txt"
    script = folder / "fake-browser.py"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nwith open({str(record)!r}, 'a') as f:\n    f.write(sys.argv[1] + '\\n')\n"
    )
    script.chmod(0o755)
    return script, record


def stream_in_slot_order(server: Server, bodies: dict[str, dict]) -> dict[str, str]:
    """Start each streamed request once the one before holds a slot and has a token (so they take slots
    0, 1, 2... in order), then read them all to the end. Returns each answer's text by name."""
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


# ---- a library model on a local Hub (tests/hf_fixture.py), for pulls ------------------------------

LIB_REPO, LIB_FILE, LIB_ID = "acme/tiny-lib-GGUF", "tiny-lib-Q4_1.gguf", "tiny-lib"
LIB_CONFIGURED = "team/configured"  # a [[model]] table of the library server: deleting it is refused


def _library_entry(size: int) -> str:
    return f"""
[[model]]
id = "{LIB_ID}"
name = "Tiny library model"
description = "SmolLM2 135M from the test Hub"
size = {size}
capabilities = ["chat"]
params = 134_500_000
context = 8192
license = "apache-2.0"
ollama = ["tiny-lib:135m"]
source = {{ kind = "hf", repo = "{LIB_REPO}", file = "{LIB_FILE}" }}
"""


def start_library_server(home: Path, model_path: Path, hub_url: str) -> Server:
    """A server with the test model, a ``[[model]]`` table, and ``tiny-lib`` in its library: the shipped catalog
    plus one entry (``EDGE_RUN_CATALOG``), on the Hub at ``hub_url``."""
    from importlib import resources

    set_up(home, "models", "add", str(model_path), "--id", MODEL_ID)
    (home / "config").mkdir(exist_ok=True)
    (home / "config" / "config.toml").write_text(f'[[model]]\nid = "{LIB_CONFIGURED}"\npath = "{model_path}"\n')
    catalog = home / "catalog.toml"
    shipped = (resources.files("edge_run.models") / "catalog.toml").read_text(encoding="utf-8")
    catalog.write_text(shipped + _library_entry(model_path.stat().st_size))
    env = {
        "HF_ENDPOINT": hub_url,
        "HF_HOME": str(home / "hf-home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DOWNLOAD_TIMEOUT": "120",  # a download held halfway must not time out
        "EDGE_RUN_CATALOG": str(catalog),
    }
    return start_server(home, "--ctx", "1024", "--slots", "2", "--max-loaded", "2", env=env)
