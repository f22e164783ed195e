"""Smoke-test the built one-file executable the way a person uses it.

    python packaging/smoke.py --model PATH.gguf             # dist/edge-run, the model given by path
    python packaging/smoke.py --embedded --binary dist/x    # a build with --embed-default-model

Checks, each on a fresh ``EDGE_RUN_HOME`` and a private ``TMPDIR`` (where the one-file bootloader
unpacks itself):

1. ``edge-run serve``: one chat completion through the ``openai`` SDK, one through ``curl``, a clean
   stop on SIGTERM, and no ``_MEI*`` folder left behind.
2. No arguments, stdin not a terminal (a double-click): it serves, "opens" the one-time login link
   through ``$EDGE_RUN_BROWSER`` (a script that records the URL), and the link logs in once.
   A second double-click finds the running server, opens its page and exits 0.
3. ``edge-run models pull hf:...`` from a local Hugging Face compatible server (the tests' fixture,
   serving the given model), then ``serve`` of the pulled model and one chat completion.

Prints the binary's size and the time from launch to the first ``/health`` 200 (reported, never
asserted: it depends on the machine). Exits non-zero on the first failed check.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY_RE = re.compile(r"\ber-[A-Za-z0-9_-]{40,}\b")
LOGIN_RE = re.compile(r"http://\S+/#login=[A-Za-z0-9_-]+")
HEALTH_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@dataclass
class Launch:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    tmp: Path
    seconds_to_health: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"did not stop within 30 s of signal {sig}") from None
        return self.proc.returncode


def launch(binary: Path, args: list[str], work: Path, env: dict[str, str]) -> Launch:
    """Start the binary and wait for its first /health 200, timing it from just before exec."""
    port = free_port()
    home = work / f"home-{port}"
    tmp = work / f"tmp-{port}"
    tmp.mkdir(parents=True)
    log = work / f"edge-run-{port}.log"
    full_env = {
        **os.environ,
        "EDGE_RUN_HOME": str(home),
        "EDGE_RUN_PORT": str(port),
        "TMPDIR": str(tmp),
        **env,
    }
    with log.open("wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [str(binary), *args], env=full_env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = started + HEALTH_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode} before /health:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    break
        if time.perf_counter() > deadline:
            proc.kill()
            raise AssertionError(f"no /health 200 within {HEALTH_TIMEOUT} s:\n{log.read_text()[-4000:]}")
        time.sleep(0.01)
    return Launch(proc, port, log, tmp, time.perf_counter() - started)


def check_stopped_clean(run: Launch, sig: int = signal.SIGTERM) -> None:
    code = run.stop(sig)
    # uvicorn stops gracefully, then re-raises the signal; the bootloader passes that on.
    assert code in (0, -sig, 128 + sig), f"exit status {code}:\n{run.output()[-3000:]}"
    left = list(run.tmp.iterdir())
    assert not left, f"left behind in TMPDIR after a clean stop: {left}"


def check_serve(binary: Path, work: Path, serve_args: list[str], launches: int) -> None:
    times = []
    for i in range(launches):
        run = launch(binary, ["serve", *serve_args], work, {})
        times.append(run.seconds_to_health)
        try:
            if i == 0:
                chat(run)
        finally:
            check_stopped_clean(run, signal.SIGINT if i == 1 else signal.SIGTERM)
    shown = ", ".join(f"{t:.2f}" for t in times)
    print(f"launch to first /health 200: median {statistics.median(times):.2f} s ({shown} s)")


def chat(run: Launch) -> None:
    import openai

    [key] = KEY_RE.findall(run.output())
    status, models = http("GET", run.url + "/v1/models", key=key)
    assert status == 200, models
    model = models["data"][0]["id"]
    client = openai.OpenAI(base_url=run.url + "/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0
    )
    assert reply.choices[0].message.content, reply
    print(f"openai SDK: {reply.choices[0].message.content.strip()!r}")

    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8})
    curl = subprocess.run(
        ["curl", "-sS", "--fail-with-body", run.url + "/v1/chat/completions",
         "-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json", "-d", body],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert curl.returncode == 0, curl.stdout + curl.stderr
    content = json.loads(curl.stdout)["choices"][0]["message"]["content"]
    assert content, curl.stdout
    print(f"curl: {content.strip()!r}")
    with urllib.request.urlopen(run.url + "/", timeout=10) as r:
        assert b"/static/app.js" in r.read(), "the web page is not served"


@contextlib.contextmanager
def recorder(work: Path) -> Iterator[tuple[Path, Path]]:
    """A fake browser: a shell script that appends each URL it is given to a file."""
    record = work / "opened.txt"
    script = work / "fake-browser.sh"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> "{record}"\n')
    script.chmod(0o755)
    yield script, record


def wait_lines(path: Path, n: int, timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(lines := path.read_text().splitlines()) >= n:
            return lines
        time.sleep(0.05)
    raise AssertionError(f"the browser was not opened ({n} URLs expected in {path})")


def check_double_click(binary: Path, work: Path, model_env: dict[str, str]) -> None:
    with recorder(work) as (script, record):
        env = {"EDGE_RUN_BROWSER": str(script), **model_env}
        run = launch(binary, [], work, env)
        try:
            [login] = wait_lines(record, 1)
            assert login.startswith(run.url + "/#login="), login
            assert LOGIN_RE.search(run.output()), run.output()
            code = login.partition("#login=")[2]
            status, body = http("POST", run.url + "/auth/exchange", {"code": code})
            assert status == 200, body
            status, models = http("GET", run.url + "/v1/models", key=body["api_key"])
            assert status == 200, models
            status, again = http("POST", run.url + "/auth/exchange", {"code": code})
            assert status == 401 and again["error"]["message"], again
            print(f"no arguments: opened {login.split('#')[0]}#login=..., which logged in once")

            second = subprocess.run(
                [str(binary)],
                env={**os.environ, "EDGE_RUN_HOME": str(work / "second"), "EDGE_RUN_PORT": str(run.port),
                     "TMPDIR": str(run.tmp), **env},
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            assert second.returncode == 0, second.stderr
            assert wait_lines(record, 2)[1] == run.url + "/", record.read_text()
            print("second double-click: opened the running server's page and exited 0")
        finally:
            check_stopped_clean(run)


def check_pull(binary: Path, work: Path, model: Path) -> None:
    """The binary pulls from a Hub (``HF_ENDPOINT``: the tests' local fixture) and serves what it pulled."""
    sys.path.insert(0, str(ROOT))
    from tests.hf_fixture import HubFixture

    home = work / "home-pull"
    repo = {"tiny-Q4_K_M.gguf": model.read_bytes(), "README.md": b"# tiny"}
    with HubFixture({"acme/tiny-GGUF": repo}) as hub:
        env = {**os.environ, "EDGE_RUN_HOME": str(home), "HF_ENDPOINT": hub.url, "HF_HOME": str(work / "hf")}
        cmd = [str(binary), "models", "pull", "hf:acme/tiny-GGUF"]
        pulled = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert "acme/tiny-GGUF:Q4_K_M" in pulled.stdout, pulled.stdout
    run = launch(binary, ["serve", "--model", "acme/tiny-GGUF:Q4_K_M"], work, {"EDGE_RUN_HOME": str(home)})
    try:
        chat(run)
    finally:
        check_stopped_clean(run)
    print("models pull hf: pulled from a local Hub, verified, served")


def main(argv: list[str] | None = None) -> int:
    exe = "edge-run.exe" if os.name == "nt" else "edge-run"
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", type=Path, default=ROOT / "dist" / exe)
    parser.add_argument("--model", type=Path, help="a GGUF to serve (not needed with --embedded)")
    parser.add_argument("--embedded", action="store_true", help="the binary carries the default model")
    parser.add_argument("--launches", type=int, default=3, help="serve launches to time  [default: 3]")
    args = parser.parse_args(argv)
    if not args.embedded and args.model is None:
        parser.error("--model is required unless --embedded")

    binary = args.binary.resolve()
    print(f"binary: {binary} ({binary.stat().st_size / 1e6:.1f} MB)")
    serve_args = [] if args.embedded else ["--model", str(args.model.resolve())]
    model_env = {} if args.embedded else {"EDGE_RUN_PRELOAD": str(args.model.resolve())}
    work = Path(tempfile.mkdtemp(prefix="edge-run-smoke-"))
    try:
        check_serve(binary, work, serve_args, args.launches)
        check_double_click(binary, work, model_env)
        if not args.embedded:
            check_pull(binary, work, args.model.resolve())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("smoke test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
