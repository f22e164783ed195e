"""API keys as an access layer on the real server: model scopes, limits, rate-limit headers, usage, expiry."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.payloads import NO_EOS
from tests.support import Server, run_cli, set_up, start_server, usage_by, wait_for

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, model_path: Path):
    """One server offering `acme/one`, `acme/two` and `other/model` (the same test GGUF under three ids)."""
    home = tmp_path_factory.mktemp("home")
    for model_id in ("acme/one", "acme/two", "other/model"):
        set_up(home, "models", "add", str(model_path), "--id", model_id)
    srv = start_server(home, "--model", "acme/one", "--ctx", "1024", "--slots", "4")
    yield srv
    srv.stop()


def new_key(server: Server, name: str, *options: str) -> str:
    return set_up(server.home, "keys", "create", "--name", name, *options).strip()


def chat(server: Server, key: str, model: str = "acme/one", **body) -> httpx.Response:
    return httpx.post(
        server.base_url + "/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": HI, "max_tokens": 8, "temperature": 0, **body},
        timeout=120,
    )


def written_usage(server: Server, key_name: str, requests: int) -> dict[str, int]:
    """`keys usage --key NAME --by key`: the key's totals, once the key database holds ``requests`` of its
    requests (the server writes usage about once a second)."""
    names = ("requests", "prompt", "completion", "cached", "total")

    def totals() -> dict[str, int] | None:
        row = usage_by(server, "key", key_name).get(key_name)
        return dict(zip(names, row, strict=True)) if row and row[0] >= requests else None

    return wait_for(totals, 15, f"{requests} requests of `{key_name}` in the usage", every=0.2)


def test_alice_sees_only_her_models_and_her_fourth_request_in_a_minute_is_429(server: Server):
    key = new_key(server, "alice", "--rpm", "3", "--models", "acme/*")
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=120)
    assert sorted(m.id for m in client.models.list().data) == ["acme/one", "acme/two"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("other/model")

    answers = []
    for i in range(3):
        r = client.chat.completions.with_raw_response.create(model="acme/one", messages=HI, max_tokens=8 + i)
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        assert r.headers["x-ratelimit-remaining-requests"] == str(2 - i)
        answers.append(r.parse().usage)
    fourth = chat(server, key)
    assert fourth.status_code == 429
    assert fourth.json()["error"]["code"] == "rate_limit_exceeded"
    assert fourth.json()["error"]["type"] == "requests"
    assert 1 <= int(fourth.headers["retry-after"]) <= 60
    assert fourth.headers["x-ratelimit-remaining-requests"] == "0"
    assert fourth.headers["x-ratelimit-reset-requests"].endswith("s")

    totals = written_usage(server, "alice", 3)
    # the refused fourth ran nothing and is not counted: one task writes the records in the order they came,
    # so once a later request's record is written, the fourth's would be too
    later = new_key(server, "after-alice")
    assert chat(server, later).status_code == 200
    written_usage(server, "after-alice", 1)
    assert written_usage(server, "alice", 3)["requests"] == 3
    assert totals["prompt"] == sum(u.prompt_tokens for u in answers)
    assert totals["completion"] == sum(u.completion_tokens for u in answers)


def test_a_model_outside_the_scope_is_404_like_a_missing_one(server: Server):
    key = new_key(server, "scoped", "--models", "acme/one")
    r = chat(server, key, model="other/model")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert chat(server, key).status_code == 200


def test_max_parallel_two_of_ten_run_and_the_rest_get_429(server: Server):
    key = new_key(server, "two-at-once", "--max-parallel", "2")

    async def ten() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:
            body = {"model": "acme/one", "messages": HI, "max_tokens": 200, "stream": True}
            headers = {"Authorization": f"Bearer {key}"}

            url = server.base_url + "/chat/completions"

            async def one() -> int:
                async with client.stream("POST", url, json=body, headers=headers) as r:
                    await r.aread()
                    return r.status_code

            return await asyncio.gather(*(one() for _ in range(10)))

    codes = asyncio.run(ten())
    assert sorted(codes) == [200, 200] + [429] * 8
    assert chat(server, key).status_code == 200  # both places are free again


def test_tpm_counts_streamed_tokens(server: Server):
    key = new_key(server, "streamer", "--tpm", "60")
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0, timeout=120)
    story = [{"role": "user", "content": "Tell me a very long story about a lighthouse keeper."}]
    stream = client.chat.completions.create(  # EOS banned: a sampled story may end before the limit (19 tokens once)
        model="acme/one", messages=story, max_tokens=80, stream=True, stream_options={"include_usage": True},
        logit_bias=NO_EOS,
    )
    used = None
    for chunk in stream:  # never cut off mid-answer: the limit refuses the next request
        used = chunk.usage or used
    # the prompt alone is under the limit: only the streamed tokens take the minute over it
    assert used is not None and used.prompt_tokens < 60 < used.total_tokens
    r = chat(server, key)
    assert r.status_code == 429 and r.json()["error"]["type"] == "tokens"
    assert r.headers["x-ratelimit-remaining-tokens"] == "0"
    assert r.headers["x-ratelimit-limit-tokens"] == "60"


def test_an_expired_key_is_refused(server: Server):
    key = new_key(server, "old", "--expires", "2020-01-01")
    r = chat(server, key)
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    assert "expires 2020-01-02" in run_cli(server.home, "keys", "list").stdout  # the end of that day
    run_cli(server.home, "keys", "update", "old", "--expires", "never")
    assert chat(server, key).status_code == 200  # from the next request, no restart


def test_keys_created_while_the_server_is_busy_all_work(server: Server):
    admin = new_key(server, "busy-maker", "--role", "admin")

    async def load(stop: asyncio.Event) -> int:
        n = 0
        async with httpx.AsyncClient(timeout=120) as client:
            while not stop.is_set():
                body = {"model": "acme/one", "messages": HI, "max_tokens": 4}
                r = await client.post(
                    server.base_url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {admin}"}
                )
                assert r.status_code == 200
                n += 1
        return n

    async def create_keys() -> list[str]:
        cmd = [sys.executable, "-m", "edge_run", "keys", "create"]
        env = {"EDGE_RUN_HOME": str(server.home), "PATH": "/usr/bin:/bin"}
        procs = [
            await asyncio.create_subprocess_exec(*cmd, "--name", f"burst-{i}", env=env, stdout=subprocess.PIPE)
            for i in range(6)
        ]
        return [(await p.communicate())[0].decode().strip() for p in procs]

    async def both() -> tuple[list[str], int]:
        stop = asyncio.Event()
        busy = asyncio.create_task(load(stop))
        made = await create_keys()
        stop.set()
        return made, await busy

    made, served = asyncio.run(both())
    assert served >= 1
    assert all(k.startswith("er-") for k in made)
    listing = run_cli(server.home, "keys", "list").stdout
    assert all(f"burst-{i}\t" in listing for i in range(6))
    assert all(chat(server, k).status_code == 200 for k in made)


def test_usage_route_shows_a_user_only_their_own_and_an_admin_everything(server: Server):
    user = new_key(server, "carol")
    admin = new_key(server, "boss", "--role", "admin")
    assert chat(server, user).status_code == 200

    def report(key: str) -> dict:
        r = httpx.get(server.base_url + "/usage", params={"since": "1d"}, headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        return r.json()

    def written() -> dict | None:  # the server writes usage about once a second
        mine = report(user)
        return mine if mine["data"] else None

    mine = wait_for(written, 15, "carol's usage in the report")
    assert mine["scope"] == "this key" and {row["key"] for row in mine["data"]} == {"carol"}
    everything = report(admin)
    assert everything["scope"] == "all keys" and "carol" in {row["key"] for row in everything["data"]}
    bad = httpx.get(server.base_url + "/usage", params={"since": "soon"}, headers={"Authorization": f"Bearer {user}"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "since"


def test_revoked_key_stops_working_on_the_running_server(server: Server):
    key = new_key(server, "short-lived")
    assert httpx.get(server.base_url + "/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    run_cli(server.home, "keys", "revoke", "short-lived")
    r = httpx.get(server.base_url + "/models", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 401
    assert set(r.json()) == {"error"}
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error"
