"""Many models in one server, on two different real models (SmolLM2 135M and Gemma 3 270M), driven by the SDK."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.hf_fixture import HubFixture
from tests.support import Server, run_cli, set_up, share_of_cores, start_server, wait_for

pytestmark = pytest.mark.integration

PROMPT = "The capital of France is"


def statuses(server: Server) -> dict[str, str]:
    r = httpx.get(server.base_url + "/models", headers={"Authorization": f"Bearer {server.key}"}, timeout=10)
    r.raise_for_status()
    return {m["id"]: m["status"] for m in r.json()["data"]}


def loads(server: Server) -> dict[str, int]:
    return {m["id"]: m["loads"] for m in server.health()["models"]}


def complete(client: openai.OpenAI, model: str, **kwargs) -> str:
    r = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0, **kwargs)
    assert r.model == model
    return r.choices[0].text


def serve_two_models(home: Path, model_path: Path, second_model_path: Path) -> Server:
    """A home with `acme/one` (SmolLM2) and `acme/two` (Gemma), served with --keep-alive 2 --max-loaded 1."""
    home.mkdir()
    set_up(home, "models", "add", str(model_path), "--id", "acme/one")
    set_up(home, "models", "add", str(second_model_path), "--id", "acme/two")
    return start_server(home, "--keep-alive", "2", "--max-loaded", "1", "--ctx", "512", "--slots", "4")


@pytest.fixture
def fresh_two_models(tmp_path: Path, model_path: Path, second_model_path: Path) -> Iterator[Server]:
    """The two models on a server of this test's own: neither has loaded yet."""
    server = serve_two_models(tmp_path / "home", model_path, second_model_path)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory, model_path: Path, second_model_path: Path) -> Iterator[Server]:
    """The two models on one server for the tests that work from whatever state they find it in."""
    server = serve_two_models(tmp_path_factory.mktemp("two-models") / "home", model_path, second_model_path)
    yield server
    server.stop()


def test_two_models_answer_alternately_and_unload_when_idle(fresh_two_models: Server):
    server = fresh_two_models
    assert statuses(server) == {"acme/one": "unloaded", "acme/two": "unloaded"}
    client = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=300)
    answers: dict[str, list[str]] = {"acme/one": [], "acme/two": []}
    for model in ["acme/one", "acme/two", "acme/one", "acme/two"]:
        answers[model].append(complete(client, model))
        # --max-loaded 1: the model just used is the only one loaded
        assert statuses(server) == {model: "loaded", ({"acme/one", "acme/two"} - {model}).pop(): "unloaded"}
    # each id always gets its own model's greedy answer, and the two models answer differently
    assert answers["acme/one"][0] == answers["acme/one"][1]
    assert answers["acme/two"][0] == answers["acme/two"][1]
    assert answers["acme/one"][0] != answers["acme/two"][0]
    assert loads(server) == {"acme/one": 2, "acme/two": 2}

    complete(client, "acme/one")
    last_answer = time.monotonic()
    while statuses(server)["acme/one"] != "unloaded":
        assert time.monotonic() - last_answer < 10, "acme/one still loaded 10 s after its last answer"
        time.sleep(0.2)
    assert time.monotonic() - last_answer >= 1.8  # and not before its keep-alive of 2 s


def test_eight_first_requests_to_an_unloaded_model_cause_one_load(two_models: Server):
    server = two_models
    wait_for(lambda: statuses(server)["acme/two"] == "unloaded", 10, "acme/two unloaded (keep-alive 2 s)")
    before = loads(server)["acme/two"]

    async def burst() -> list[str]:
        client = openai.AsyncOpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=300)
        try:
            replies = await asyncio.gather(
                *(
                    client.chat.completions.create(
                        model="acme/two", messages=[{"role": "user", "content": f"Count to {i}"}], max_tokens=8
                    )
                    for i in range(8)
                )
            )
        finally:
            await client.close()
        return [r.choices[0].finish_reason for r in replies]

    assert all(reason in ("stop", "length") for reason in asyncio.run(burst()))
    assert loads(server)["acme/two"] == before + 1


def test_keep_alive_in_the_request_body_unloads_right_after_the_answer(two_models: Server):
    server = two_models
    client = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=300)
    complete(client, "acme/one", extra_body={"keep_alive": 0})
    deadline = time.monotonic() + 3
    while statuses(server)["acme/one"] != "unloaded":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    r = httpx.post(
        server.base_url + "/completions",
        headers={"Authorization": f"Bearer {server.key}"},
        json={"model": "acme/one", "prompt": "x", "keep_alive": -2},
        timeout=30,
    )
    assert r.status_code == 400 and "keep_alive" in r.json()["error"]["message"]


def test_ps_and_models_list_ask_the_running_server(two_models: Server):
    server = two_models
    client = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=300)
    complete(client, "acme/two")
    env = {"EDGE_RUN_PORT": str(server.port)}
    ps = run_cli(server.home, "ps", env=env).stdout
    assert "acme/two" in ps and "loaded" in ps and "acme/one" not in ps
    listing = run_cli(server.home, "models", "list", env=env).stdout
    one = next(line for line in listing.splitlines() if line.startswith("acme/one"))
    two = next(line for line in listing.splitlines() if line.startswith("acme/two"))
    assert "Q4_1" in one and one.rstrip().endswith("unloaded")
    assert "Q4_K_M" in two and two.rstrip().endswith("loaded")
    show = run_cli(server.home, "models", "show", "acme/two").stdout
    assert "gemma3" in show and "Q4_K_M" in show
    assert "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818" in show


def test_two_models_at_once_share_the_cores(tmp_path: Path, model_path: Path, second_model_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    set_up(home, "models", "add", str(model_path), "--id", "acme/one")
    set_up(home, "models", "add", str(second_model_path), "--id", "acme/two")
    server = start_server(home, "--model", "acme/one", "--model", "acme/two", "--ctx", "512")
    try:
        both_busy: list[bool] = []

        async def both() -> list[str]:
            client = openai.AsyncOpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=300)

            async def one(model: str) -> str:
                r = await client.completions.create(model=model, prompt=PROMPT, max_tokens=64, temperature=0)
                return r.choices[0].finish_reason

            async def watch() -> None:
                async with httpx.AsyncClient() as h:
                    while True:
                        models = (await h.get(server.url + "/health")).json()["models"]
                        both_busy.append(all(m["slots_busy"] for m in models))
                        await asyncio.sleep(0.02)

            watcher = asyncio.create_task(watch())
            try:
                return await asyncio.gather(one("acme/one"), one("acme/two"))
            finally:
                watcher.cancel()
                await client.close()

        assert asyncio.run(both()) == ["length", "length"]
        assert any(both_busy), "the two answers never ran at the same time"
        health = server.health()
        assert health["cores"] == share_of_cores()  # the machine's cores, or the test worker's share of them
        assert 1 <= health["threads_peak"] <= health["cores"]
    finally:
        server.stop()


def test_a_model_that_fails_to_load_is_503_and_the_others_answer(tmp_path: Path, model_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(model_path.read_bytes())
    set_up(home, "models", "add", str(model_path), "--id", "acme/one")
    set_up(home, "models", "add", str(broken), "--id", "acme/broken")
    broken.write_bytes(model_path.read_bytes()[: 1 << 20])  # damaged after it was added: a real header, then nothing
    server = start_server(home, "--model", "acme/one")
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=300)
        with pytest.raises(openai.InternalServerError) as caught:
            complete(client, "acme/broken")
        assert caught.value.status_code == 503
        assert "acme/broken" in caught.value.message and "failed to load" in caught.value.message
        assert statuses(server) == {"acme/broken": "failed", "acme/one": "loaded"}
        assert complete(client, "acme/one")
    finally:
        server.stop()


def test_pull_from_a_hub_then_serve_then_remove(tmp_path: Path, model_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    gguf = model_path.read_bytes()
    repo = {"tiny-Q8_0.gguf": gguf[:4096], "tiny-Q4_K_M.gguf": gguf, "README.md": b"# tiny"}
    with HubFixture({"acme/tiny-GGUF": repo}) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
        pulled = run_cli(home, "models", "pull", "hf:acme/tiny-GGUF", env=env)
        assert "acme/tiny-GGUF:Q4_K_M" in pulled.stdout  # Q4_K_M is picked first, as llama.cpp's -hf does
        assert not any("Q8_0" in path for _, path, _ in hub.requests)
    server = start_server(home, "--model", "acme/tiny-GGUF:Q4_K_M")
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0, timeout=300)
        assert complete(client, "acme/tiny-GGUF:Q4_K_M")
    finally:
        server.stop()
    files = list((home / "data" / "models" / "huggingface").rglob("*.gguf"))
    assert files
    removed = run_cli(home, "models", "rm", "acme/tiny-GGUF:Q4_K_M").stdout
    assert "deleted" in removed
    cache = home / "data" / "models" / "huggingface"
    assert not [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size > 1 << 20]  # the blob is gone
    assert "acme/tiny-GGUF" not in run_cli(home, "models", "list").stdout


def test_models_rm_keeps_a_file_edge_run_did_not_download(tmp_path: Path, model_path: Path):
    run_cli(tmp_path, "models", "add", str(model_path), "--id", "mine")
    out = run_cli(tmp_path, "models", "rm", "mine").stdout
    assert "kept" in out and model_path.is_file()
    assert run_cli(tmp_path, "models", "rm", "mine", check=False).returncode != 0


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "not a gguf", "missing"])
def test_models_add_refuses_a_broken_file_with_a_clear_error(tmp_path: Path, model_path: Path, damage: str):
    data = model_path.read_bytes()
    bad = tmp_path / "bad.gguf"
    if damage == "truncated":
        bad.write_bytes(data[: len(data) - 4096])
    elif damage == "corrupt":
        bad.write_bytes(data[:64] + bytes(range(256)) * 64)
    elif damage == "not a gguf":
        bad.write_bytes(b"PK\x03\x04" + data[4:1024])
    r = run_cli(tmp_path / "home", "models", "add", str(bad), "--id", "acme/bad", check=False)
    assert r.returncode in (1, 2)  # 2: click's own "does not exist"
    expected = {"truncated": "truncated", "corrupt": "broken GGUF", "not a gguf": "not a GGUF", "missing": "not exist"}
    assert expected[damage] in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
