"""Pulls from the library on the real server: streamed over SSE, joined, cancelled with nothing left behind (also
Ollama's /api/pull, whose client leaves), and a model's load, unload and delete.

The server's catalog is the shipped one plus ``tiny-lib`` (``EDGE_RUN_CATALOG``), served by the local Hub fixture;
a download is held halfway (``pause_once``) wherever a test needs it under way: no timing is involved.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hf_fixture import HubFixture
from tests.support import LIB_CONFIGURED, LIB_FILE, LIB_ID, LIB_REPO, MODEL_ID, Server, start_library_server, wait_for

OLLAMA_NAME = "tiny-lib:135m"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def hub(model_path: Path) -> Iterator[HubFixture]:
    with HubFixture({LIB_REPO: {LIB_FILE: model_path.read_bytes()}}) as fixture:
        yield fixture


@pytest.fixture(scope="module")
def lib_server(tmp_path_factory: pytest.TempPathFactory, model_path: Path, hub: HubFixture) -> Iterator[Server]:
    server = start_library_server(tmp_path_factory.mktemp("library-pulls"), model_path, hub.url)
    yield server
    server.stop()


def _auth(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.key}"}


def _events(response: httpx.Response) -> Iterator[dict]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[6:])


def _until_moved(events: Iterator[dict]) -> dict:
    """The first progress event past 0 bytes: the download is under way."""
    for event in events:
        assert event["status"] == "downloading", event
        if event["completed"] > 0:
            return event
    raise AssertionError("the stream ended before any byte arrived")


def _store_files(server: Server) -> set[Path]:
    """Every file in the models folder, except huggingface_hub's (empty) lock files and its cache tag.

    A folder the server removes while this walks it restarts the walk: a pull that unwinds deletes them."""
    models = server.home / "data" / "models"
    while True:
        try:
            found = {p for p in server.home.rglob("*") if p.is_file() or p.is_symlink()}
            break
        except FileNotFoundError:
            continue
    return {p for p in found if p.is_relative_to(models) and ".locks" not in p.parts and p.name != "CACHEDIR.TAG"}


def _model_ids(server: Server) -> list[str]:
    return [m["id"] for m in httpx.get(server.base_url + "/models", headers=_auth(server)).json()["data"]]


def _pulls(server: Server) -> list[dict]:
    return httpx.get(server.base_url + "/library/pulls", headers=_auth(server)).json()["data"]


def _stream_pull(client: httpx.Client, server: Server, name: str):
    return client.stream("POST", server.base_url + "/library/pulls", json={"model": name}, headers=_auth(server))


def test_a_cancelled_pull_leaves_nothing_and_is_not_offered(lib_server: Server, hub: HubFixture, model_path: Path):
    server = lib_server
    before = _store_files(server)
    resume = hub.pause_once(LIB_REPO, LIB_FILE, model_path.stat().st_size // 2)
    with httpx.Client(timeout=120) as client, _stream_pull(client, server, OLLAMA_NAME) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _events(r)
        moved = _until_moved(events)
        assert moved["file"] == LIB_FILE and moved["total"] == model_path.stat().st_size
        assert [p["model"] for p in _pulls(server)] == [LIB_ID]
        assert any(p.name.endswith(".incomplete") for p in _store_files(server) - before)  # something to clean
        cancel = httpx.delete(server.base_url + f"/library/pulls/{OLLAMA_NAME}", headers=_auth(server))
        assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
        again = httpx.delete(server.base_url + f"/library/pulls/{LIB_ID}", headers=_auth(server))
        assert again.status_code == 404 and again.json()["error"]["code"] == "model_not_found"
        resume.set()  # the next bytes' progress report raises PullCancelled
        rest = list(events)
    assert rest[-1] == {"status": "cancelled"}
    assert _store_files(server) == before
    assert LIB_ID not in _model_ids(server) and _pulls(server) == []


def test_ollamas_pull_cancelled_by_its_client_leaving_leaves_nothing(
    lib_server: Server, hub: HubFixture, model_path: Path
):
    server = lib_server
    before = _store_files(server)
    resume = hub.pause_once(LIB_REPO, LIB_FILE, model_path.stat().st_size // 2)
    with httpx.Client(timeout=120) as client:
        body = {"model": OLLAMA_NAME, "stream": True}
        with client.stream("POST", server.url + "/api/pull", json=body, headers=_auth(server)) as r:
            lines = r.iter_lines()  # kept: closing it (a generator dropped) would close the connection here
            assert next(line for line in lines if json.loads(line).get("completed"))
            assert [p["model"] for p in _pulls(server)] == [LIB_ID]
        # the client is gone: the pull is cancelled (no longer listed), then unwinds once bytes move again
        wait_for(lambda: _pulls(server) == [], 60, "the pull cancelled")
    resume.set()
    wait_for(lambda: _store_files(server) == before, 60, "the partial download removed")
    assert LIB_ID not in _model_ids(server)


def test_a_pull_joined_after_its_first_client_left_succeeds_and_the_model_chats(
    lib_server: Server, hub: HubFixture, model_path: Path
):
    server = lib_server
    gets = len(hub.gets_of(LIB_REPO, LIB_FILE))
    resume = hub.pause_once(LIB_REPO, LIB_FILE, model_path.stat().st_size // 2)
    with httpx.Client(timeout=120) as client:
        with _stream_pull(client, server, OLLAMA_NAME) as first:
            moved = _until_moved(_events(first))
        # the page reloaded: leaving did not cancel, and posting again follows the same pull from where it is
        with _stream_pull(client, server, LIB_ID) as second:
            events = _events(second)
            assert next(events)["completed"] >= moved["completed"]
            resume.set()
            rest = list(events)
    assert rest[-1] == {"status": "success", "model": LIB_ID}
    assert any(e.get("completed") == e.get("total") == model_path.stat().st_size for e in rest)
    assert len(hub.gets_of(LIB_REPO, LIB_FILE)) == gets + 1  # one download for both
    assert LIB_ID in _model_ids(server)
    body = {"model": LIB_ID, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
    r = httpx.post(server.base_url + "/chat/completions", json=body, headers=_auth(server), timeout=300)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]


def test_load_unload_and_delete(lib_server: Server):
    server = lib_server
    if LIB_ID not in _model_ids(server):
        pytest.skip("needs the model the previous test pulled")
    url = f"{server.base_url}/models/{LIB_ID}"
    loaded = httpx.post(url + "/load", headers=_auth(server), timeout=300)
    assert loaded.status_code == 200 and loaded.json()["status"] == "loaded"
    unloaded = httpx.post(url + "/unload", headers=_auth(server))
    assert unloaded.status_code == 200 and unloaded.json()["status"] == "unloaded"
    assert httpx.get(url, headers=_auth(server)).json()["status"] == "unloaded"
    blobs = {p for p in _store_files(server) if p.parent.name == "blobs" and "tiny-lib" in str(p)}
    assert len(blobs) == 1 and any(p.name == LIB_FILE for p in _store_files(server))
    deleted = httpx.delete(url, headers=_auth(server))
    assert deleted.status_code == 200 and deleted.json() == {"id": LIB_ID, "object": "model", "deleted": True}
    assert LIB_ID not in _model_ids(server)
    left = _store_files(server)
    assert not blobs & left and not any(p.name == LIB_FILE for p in left), left
    assert httpx.delete(url, headers=_auth(server)).status_code == 404


def test_bad_input_is_a_clear_4xx_and_leaves_nothing(lib_server: Server):
    server = lib_server
    before = _store_files(server)

    def pull(name: str) -> httpx.Response:
        return httpx.post(server.base_url + "/library/pulls", json={"model": name}, headers=_auth(server), timeout=60)

    unknown = pull("no-such-model:7b")
    assert unknown.status_code == 404 and "not in the library" in unknown.json()["error"]["message"]
    no_tag = pull(f"hf:{LIB_REPO}:Q9_9")
    assert no_tag.status_code == 400 and "no GGUF file for quant Q9_9" in no_tag.json()["error"]["message"]
    no_repo = pull("hf:acme/no-such-repo")
    assert no_repo.status_code == 400 and "no model repo" in no_repo.json()["error"]["message"]
    assert pull("hf:not a repo").status_code == 400
    assert _store_files(server) == before
    auth = _auth(server)
    assert httpx.delete(server.base_url + "/library/pulls/hf:acme/idle", headers=auth).status_code == 404
    configured = httpx.delete(f"{server.base_url}/models/{LIB_CONFIGURED}", headers=auth)
    assert configured.status_code == 400 and "config.toml" in configured.json()["error"]["message"]
    assert LIB_CONFIGURED in _model_ids(server)
    assert httpx.delete(f"{server.base_url}/models/no/such", headers=auth).status_code == 404
    assert httpx.post(f"{server.base_url}/models/no/such/unload", headers=auth).status_code == 404
    wrong = httpx.post(f"{server.base_url}/models/{MODEL_ID}/frobnicate", headers=auth)
    assert wrong.status_code == 400 and "/load" in wrong.json()["error"]["message"]
