"""Upstream engines behind edge-run's endpoint and keys: real llama-cpp-python servers and a second edge-run.

Two ``python -m llama_cpp.server`` processes (llama-cpp-python's own OpenAI-compatible server, behind
its own API key, started through ``tests/llama_cpp_server.py`` so that it runs on AMX CPUs too) serve
the test model as replicas of ``team/big``; a second edge-run serves it as
``team/other``. The edge-run under test also has a local model whose overflow goes to ``team/big``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.support import Server, free_port, set_up, start_server, usage_by, wait_for

pytestmark = pytest.mark.integration

LAUNCHER = Path(__file__).parents[1] / "llama_cpp_server.py"  # llama_cpp.server without extra buffer types
UPSTREAM_KEY = "sk-upstream-secret-0123456789abcdef"
ASK = [{"role": "user", "content": "Name three colours."}]


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def start_llama_cpp_server(model: Path, log: Path) -> Replica:
    port = free_port()
    cmd = [sys.executable, str(LAUNCHER), "--model", str(model), "--model_alias", "smol-upstream",
           "--port", str(port), "--n_ctx", "1024", "--n_threads", "1", "--n_threads_batch", "1",
           "--api_key", UPSTREAM_KEY]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    replica = Replica(proc, port)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            r = httpx.get(replica.base_url + "/models", headers={"Authorization": f"Bearer {UPSTREAM_KEY}"}, timeout=2)
            if r.status_code == 200:
                assert "use_extra_bufts=False" in log.read_text(errors="replace"), "the launcher's setting was not used"
                return replica
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("llama_cpp.server did not start")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[tuple[Server, list[Replica], Server]]:
    work = tmp_path_factory.mktemp("upstreams")
    replicas = [start_llama_cpp_server(model_path, work / f"replica-{i}.log") for i in range(2)]
    other_home = work / "other"
    other_home.mkdir()
    set_up(other_home, "models", "add", str(model_path), "--id", "smol")
    other = start_server(other_home, "--model", "smol", "--ctx", "1024", "--threads", "1")
    home = work / "home"
    home.mkdir()
    set_up(home, "models", "add", str(model_path), "--id", "acme/local")
    for replica in replicas:
        set_up(home, "models", "add-upstream", "team/big", "--base-url", replica.base_url,
               "--api-key-env", "BIG_UPSTREAM_KEY", "--model", "smol-upstream")  # fmt: skip
    set_up(home, "models", "add-upstream", "team/other", "--base-url", other.base_url,
           "--api-key-env", "OTHER_UPSTREAM_KEY", "--model", "smol")  # fmt: skip
    with (home / "config" / "config.toml").open("a") as f:  # the local model spills over to team/big
        f.write(f'\n[[model]]\nid = "acme/full"\npath = "{model_path}"\nslots = 1\noverflow = "team/big"\n')
    env = {"BIG_UPSTREAM_KEY": UPSTREAM_KEY, "OTHER_UPSTREAM_KEY": other.key}
    server = start_server(home, "--model", "acme/full", "--max-queue", "0", "--ctx", "1024", env=env)
    try:
        yield server, replicas, other
    finally:
        server.stop()
        other.stop()
        for replica in replicas:
            replica.proc.kill()
            replica.proc.wait()


def test_models_lists_upstreams_with_their_health(stack):
    server, _, _ = stack
    client = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
    ids = {m.id for m in client.models.list().data}
    assert {"team/big", "team/other", "acme/local", "acme/full"} <= ids
    health = {m["id"]: m for m in server.health()["models"]}
    big = health["team/big"]
    assert big["state"] == "loaded" and big["backend"] == "upstream"
    assert [r["healthy"] for r in big["replicas"]] == [True, True]


def test_a_streamed_answer_through_edge_run_equals_the_direct_one(stack):
    server, replicas, other = stack
    via = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=120)
    direct = openai.OpenAI(base_url=replicas[0].base_url, api_key=UPSTREAM_KEY, max_retries=0, timeout=120)
    body = {"messages": ASK, "max_tokens": 24, "temperature": 0, "seed": 1}
    # llama_cpp.server's answer to a prompt depends on its own cache: a cold prompt's last row is computed
    # in a batch, a repeated one's alone (another kernel). Asked once already, every replica answers alike.
    for replica in replicas:
        openai.OpenAI(base_url=replica.base_url, api_key=UPSTREAM_KEY, max_retries=0).chat.completions.create(
            model="smol-upstream", **body
        )
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in via.chat.completions.create(model="team/big", stream=True, **body)
        if c.choices
    )
    expected = direct.chat.completions.create(model="smol-upstream", **body).choices[0].message.content
    assert streamed and streamed == expected
    # another edge-run as the upstream, through the SDK, with this edge-run's key: its own answer
    asked = openai.OpenAI(base_url=other.base_url, api_key=other.key, max_retries=0, timeout=120)
    asked.chat.completions.create(model="smol", **body)  # both answers below find the prompt cached
    reply = via.chat.completions.create(model="team/other", **body).choices[0].message.content
    assert reply and reply == asked.chat.completions.create(model="smol", **body).choices[0].message.content


def test_usage_is_charged_to_the_local_key_and_the_upstream_key_never_leaks(stack):
    server, _, other = stack
    key = set_up(server.home, "keys", "create", "--name", "upstream-user").strip()
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=120)
    raw = client.chat.completions.with_raw_response.create(model="team/big", messages=ASK, max_tokens=8)
    usage = raw.parse().usage
    seen = [str(raw.headers), raw.text]
    streamed = httpx.post(
        server.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "team/big", "messages": ASK, "max_tokens": 8, "stream": True},
        timeout=60,
    )
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    assert '"usage"' not in streamed.text  # asked of the upstream for the accounting, not passed on
    seen += [str(streamed.headers), streamed.text]
    bad = httpx.post(
        server.base_url + "/embeddings",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "team/big", "input": ["x"], "encoding_format": "nonsense"},
        timeout=60,
    )
    seen += [str(bad.headers), bad.text]

    def both_written() -> list[int] | None:  # usage is written about once a second
        row = usage_by(server, "model", "upstream-user").get("team/big")
        return row if row and row[0] >= 2 else None

    row = wait_for(both_written, 15, "team/big's two answers in the usage")
    assert row[1] >= usage.prompt_tokens
    logs = [server.log.read_text(), (server.home / "logs" / "access.log").read_text()]
    for text in seen + logs:
        assert UPSTREAM_KEY not in text and other.key not in text


def test_overflow_spills_to_the_upstream_when_the_local_slots_are_full(stack):
    server, _, _ = stack
    client = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=120)
    story = [{"role": "user", "content": "Tell me a very long story."}]
    long_one = client.chat.completions.create(model="acme/full", messages=story, max_tokens=300, stream=True)
    next(iter(long_one))  # it holds acme/full's only slot now; its queue is 0
    spilled = client.chat.completions.create(model="acme/full", messages=ASK, max_tokens=8)
    assert spilled.model == "smol-upstream"  # answered by team/big's llama-cpp-python server
    for _ in long_one:
        pass
    local = client.chat.completions.create(model="acme/full", messages=ASK, max_tokens=8)
    assert local.model == "acme/full"  # a free slot: answered here again


def test_killing_a_replica_loses_no_later_request(stack):
    server, replicas, _ = stack
    replicas[1].proc.send_signal(signal.SIGKILL)
    replicas[1].proc.wait()

    async def burst() -> list[tuple[str, int]]:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=120)
        try:  # at once, so that some are sent to the dead replica (it has fewer outstanding) and fail over
            replies = await asyncio.gather(
                *(client.chat.completions.create(model="team/big", messages=ASK, max_tokens=4 + i) for i in range(6))
            )
        finally:
            await client.close()
        return [(r.model, r.usage.completion_tokens) for r in replies]

    # each answered whole by the live replica: its model, and the tokens each asked for (or fewer, at a stop)
    answered = asyncio.run(burst())
    assert [model for model, _ in answered] == ["smol-upstream"] * 6
    assert all(0 < tokens <= 4 + i for i, (_, tokens) in enumerate(answered)), answered
    big = next(m for m in server.health()["models"] if m["id"] == "team/big")
    dead = next(r for r in big["replicas"] if str(replicas[1].port) in r["base_url"])
    assert dead["last_error"] == "ConnectError"  # it was tried, failed, and the request went to the other one


def test_no_replica_answering_is_a_clear_502(tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    set_up(home, "models", "add-upstream", "team/gone", "--base-url", dead)
    server = start_server(home, "--no-auth", env={k: v for k, v in os.environ.items() if k != "EDGE_RUN_API_KEY"})
    try:
        r = httpx.post(server.base_url + "/chat/completions", json={"model": "team/gone", "messages": ASK}, timeout=60)
        assert r.status_code in (502, 503)
        assert r.json()["error"]["code"] == "upstream_unavailable"
    finally:
        server.stop()


def test_rpc_servers_reach_the_engine_and_a_build_without_rpc_says_how_to_get_it(tmp_path: Path, model_path: Path):
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "config.toml").write_text(
        f'[[model]]\nid = "team/split"\npath = "{model_path}"\nrpc_servers = ["127.0.0.1:{free_port()}"]\n'
    )
    server = start_server(home)
    try:
        r = httpx.post(
            server.base_url + "/chat/completions",
            headers={"Authorization": f"Bearer {server.key}"},
            json={"model": "team/split", "messages": ASK, "max_tokens": 4},
            timeout=60,
        )
        assert r.status_code == 503
        message = r.json()["error"]["message"]
        # this project's builds have no RPC; one with it would instead fail to reach the closed port
        assert "-DGGML_RPC=on" in message or "could not reach the rpc-server" in message
    finally:
        server.stop()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_model_split_onto_an_rpc_server_answers(tmp_path: Path, model_path: Path):
    """Runs where llama-cpp-python has RPC and ``EDGE_RUN_RPC_SERVER`` names llama.cpp's ``rpc-server``
    (docs/scale-out.md says how to build both); CI's build has no RPC, and the test above covers that."""
    binary = os.environ.get("EDGE_RUN_RPC_SERVER")
    if not binary:
        pytest.skip("set EDGE_RUN_RPC_SERVER to an rpc-server binary, with an RPC build of llama-cpp-python")
    port = free_port()
    worker = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for(lambda: _listening(port), 30, "rpc-server listening")
        home = tmp_path / "home"
        (home / "config").mkdir(parents=True)
        (home / "config" / "config.toml").write_text(
            f'[[model]]\nid = "team/split"\npath = "{model_path}"\nrpc_servers = ["127.0.0.1:{port}"]\n'
        )
        server = start_server(home, "--model", "team/split")
        try:
            [model] = server.health()["models"]
            assert model["gpu_layers"] == model["gpu_layers_total"] > 0  # every layer on the worker
            assert any(d.startswith("RPC") for d in model["gpu_devices"])
            client = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=120)
            reply = client.chat.completions.create(model="team/split", messages=ASK, max_tokens=8)
            assert reply.choices[0].message.content and 0 < reply.usage.completion_tokens <= 8
        finally:
            server.stop()
    finally:
        worker.kill()
        worker.wait()
