"""The command line as a person uses it: first run on a fresh home, keys, models, refusals."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx
import openai
import pytest

from tests.support import MODEL_ID, Server, free_port, run_cli, start_server, wait_healthy

pytestmark = pytest.mark.integration


def test_first_serve_fetches_the_default_model_and_prints_a_working_key(tmp_path, model_path):
    """`edge-run serve` with nothing set up: creates a key, fetches + verifies the default model, serves."""
    home = tmp_path / "fresh"
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "EDGE_RUN_HOME": str(home)}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_run", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(home=home, port=port, key="", proc=proc, log=log)
    try:
        wait_healthy(server, timeout=900)
        printed = re.findall(r"\ber-[A-Za-z0-9_-]{40,}\b", log.read_text())
        assert len(printed) == 1, log.read_text()
        client = openai.OpenAI(base_url=server.base_url, api_key=printed[0], max_retries=0)
        [card] = client.models.list().data
        r = client.chat.completions.create(
            model=card.id, messages=[{"role": "user", "content": "Say hello."}], max_tokens=12, temperature=0
        )
        assert r.choices[0].message.content.strip()
        fetched = home / "data" / "models" / model_path.name
        assert fetched.read_bytes() == model_path.read_bytes()
        assert printed[0].encode() not in (home / "config" / "keys.sqlite3").read_bytes()
        server.stop()
        # a second start on the same home prints no key: it was shown once
        again = start_server(home, key="")
        assert not re.findall(r"\ber-[A-Za-z0-9_-]{40,}\b", again.log.read_text())
        again.stop()
    finally:
        server.stop()


def test_no_auth_on_a_public_host_is_refused(tmp_path):
    r = run_cli(tmp_path, "serve", "--no-auth", "--host", "0.0.0.0", "--port", str(free_port()), check=False)
    assert r.returncode == 2
    assert "refusing" in r.stderr


def test_no_auth_on_loopback_serves_without_a_key(make_server):
    server = make_server("--no-auth")
    r = httpx.get(server.base_url + "/models")
    assert r.status_code == 200
    assert r.json()["data"][0]["id"] == MODEL_ID


def test_environment_settings_reach_the_server(make_server):
    server = make_server(env={"EDGE_RUN_SLOTS": "3", "EDGE_RUN_CTX": "512"})
    status = server.health()["models"][0]
    assert (status["slots_total"], status["ctx_per_slot"]) == (3, 512)


def test_keys_list_shows_prefixes_only(tmp_path):
    key = run_cli(tmp_path, "keys", "create", "--name", "laptop").stdout.strip()
    listing = run_cli(tmp_path, "keys", "list").stdout
    assert "laptop" in listing
    assert key[:10] in listing
    assert key not in listing
    run_cli(tmp_path, "keys", "revoke", "laptop")
    assert "laptop" not in run_cli(tmp_path, "keys", "list").stdout
    assert run_cli(tmp_path, "keys", "revoke", "laptop", check=False).returncode == 1


def test_models_add_list_and_bad_ids(tmp_path, model_path):
    run_cli(tmp_path, "models", "add", str(model_path), "--id", "team-a/small")
    listing = run_cli(tmp_path, "models", "list").stdout
    assert "team-a/small" in listing
    assert "smollm2-135m-instruct-q4_1 (default)" in listing
    bad = run_cli(tmp_path, "models", "add", str(model_path), "--id", "../escape", check=False)
    assert bad.returncode == 1
    not_gguf = tmp_path / "notes.txt"
    not_gguf.write_text("hello")
    assert run_cli(tmp_path, "models", "add", str(not_gguf), "--id", "x", check=False).returncode == 1


def test_unknown_model_flag_fails_clearly(tmp_path):
    r = run_cli(tmp_path, "serve", "--model", "no-such-model", "--port", str(free_port()), check=False)
    assert r.returncode == 1
    assert "no-such-model" in r.stderr


def test_help_lists_every_command_and_serve_flag():
    r = subprocess.run(
        [sys.executable, "-m", "edge_run", "serve", "--help"], capture_output=True, text=True, check=True
    )
    for flag in (
        "--model",
        "--host",
        "--port",
        "--ctx",
        "--threads",
        "--gpu-layers",
        "--slots",
        "--max-queue",
        "--no-auth",
        "--deterministic",
        "--allowed-host",
        "--cors-origin",
    ):
        assert flag in r.stdout
    top = subprocess.run([sys.executable, "-m", "edge_run", "--help"], capture_output=True, text=True, check=True)
    for command in ("serve", "keys", "models"):
        assert command in top.stdout


def test_ollama_api_without_keys_on_a_public_host_is_refused(tmp_path):
    r = run_cli(tmp_path, "serve", "--ollama-no-key", "--host", "0.0.0.0", "--port", str(free_port()), check=False)
    assert r.returncode == 2
    assert "--ollama-no-key" in r.stderr


def test_any_origin_without_keys_is_refused(tmp_path):
    r = run_cli(tmp_path, "serve", "--no-auth", "--cors-origin", "*", check=False)
    assert r.returncode == 2
    assert "--cors-origin *" in r.stderr


def test_ctrl_c_stops_the_server_cleanly(make_server):
    server = make_server()
    server.proc.send_signal(2)
    assert server.proc.wait(timeout=30) == 0
