"""The peers a bench starts itself, with the settings that work on this machine, and the CPU it runs on.

``llama-server``'s default load puts weights in llama.cpp's extra CPU buffer types (repacked, AMX). On Intel
CPUs with AMX the vendored llama.cpp then crashes: at start-up or on the first prompt of two or more tokens.
edge-run itself loads without them. :func:`start_llama_server` tries the default first, and if the server dies
on a warm-up prompt it starts it again with ``--no-repack`` (edge-run's own setting) and says so.
"""

from __future__ import annotations

import platform
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

__all__ = ["LlamaServer", "cpu_model", "ngram_flags", "start_llama_server"]


def cpu_model() -> str:
    """The CPU's model name and the SIMD flags that change llama.cpp's kernels, for every table's header."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8") if f in flags]
    return f"{name} ({' '.join(simd) or 'no AVX2'})"


class LlamaServer:
    """A running llama-server and the flags it was started with."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, flags: list[str], note: str) -> None:
        self.proc, self.url, self.flags, self.note = proc, url, flags, note

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Terminate a server, and kill it if it has not exited within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(proc: subprocess.Popen[bytes], url: str, alias: str, timeout: float = 120) -> bool:
    """Whether the server comes up and answers a prompt of several tokens before it dies or times out."""
    deadline = time.monotonic() + timeout
    body = {"model": alias, "messages": [{"role": "user", "content": "Say three words."}], "max_tokens": 4}
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.post(url + "/chat/completions", json=body, timeout=30).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    return False


def start_llama_server(
    binary: Path, model: Path, *, threads: int, slots: int, ctx: int, alias: str, extra: Sequence[str] = ()
) -> LlamaServer:
    """llama-server with ``slots`` slots of ``ctx`` tokens, plus ``extra``: its default load, else ``--no-repack``."""
    for load, note in (([], "its default load"), (["--no-repack"], "--no-repack: its default load crashed here")):
        port = _free_port()
        flags = ["-m", str(model), "--alias", alias, "--host", "127.0.0.1", "--port", str(port), "-np", str(slots),
                 "-c", str(slots * ctx), "-t", str(threads), "--no-webui", *extra, *load]  # fmt: skip
        proc = subprocess.Popen([str(binary), *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}/v1"
        if _answers(proc, url, alias):
            return LlamaServer(proc, url, flags, note)
        proc.kill()
        proc.wait()
    raise RuntimeError(f"{binary} did not answer, with its default load or with --no-repack")


NGRAM_KINDS = ("ngram-mod", "ngram-simple", "ngram-map-k", "ngram-cache")  # the first, then older kinds


def ngram_flags(binary: Path) -> tuple[list[str], str]:
    """The flags that give ``binary`` n-gram drafting from the context (no draft model), and what to print.

    ``--spec-type ngram-mod`` if its ``--help`` lists it, else the first other n-gram kind it lists; ``[]`` with
    the reason when it has none.
    """
    try:
        out = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], f"no n-gram drafting: {binary} --help failed ({e})"
    lines = (out.stdout + out.stderr).splitlines()
    at = next((i for i, x in enumerate(lines) if "--spec-type" in x), None)
    line = " ".join(lines[at : at + 2]) if at is not None else ""  # the kinds may wrap onto the next line
    if not line:
        return [], f"no n-gram drafting: {binary} has no --spec-type"
    for kind in NGRAM_KINDS:
        if kind in line:
            note = "" if kind == NGRAM_KINDS[0] else f" ({NGRAM_KINDS[0]} absent from its --help)"
            return ["--spec-type", kind], f"--spec-type {kind}{note}"
    return [], f"no n-gram drafting: its --spec-type offers none ({line.strip()})"
