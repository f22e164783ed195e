"""/metrics, the access log and a graceful stop, on the real server."""

from __future__ import annotations

import json
import signal
import threading

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import MODEL_ID, Server, wait_for

pytestmark = pytest.mark.integration


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_need_a_key_parse_and_count_the_tokens_of_a_request(server: Server):
    auth = {"Authorization": f"Bearer {server.key}"}
    assert httpx.get(server.url + "/metrics").status_code == 401
    label = (("model", MODEL_ID),)
    before = samples(httpx.get(server.url + "/metrics", headers=auth).text)
    r = httpx.post(
        server.base_url + "/chat/completions",
        headers=auth,
        json={"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 7},
        timeout=120,
    )
    usage = r.json()["usage"]
    after = samples(httpx.get(server.url + "/metrics", headers=auth).text)

    def grew(name: str, labels: tuple = label) -> float:
        return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)

    assert grew("llamacpp:tokens_predicted_total") == usage["completion_tokens"]
    assert grew("llamacpp:prompt_tokens_total") == usage["prompt_tokens"]
    status = (("model", MODEL_ID), ("route", "/v1/chat/completions"), ("status", "200"))
    assert grew("edge_run_requests_total", status) == 1
    assert grew("edge_run_time_to_first_token_seconds_count") == 1
    assert after[("edge_run_model_loaded", label)] == 1
    assert ("llamacpp:requests_processing", label) in after


def test_metrics_public_needs_no_key(make_server):
    server: Server = make_server("--metrics-public")
    r = httpx.get(server.url + "/metrics")
    assert r.status_code == 200 and "llamacpp:requests_processing" in r.text


def test_the_access_log_has_a_line_per_request_and_no_key(server: Server):
    auth = {"Authorization": f"Bearer {server.key}"}
    body = {"model": MODEL_ID, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    log = server.home / "logs" / "access.log"
    before = len(log.read_text().splitlines()) if log.exists() else 0  # the lines of the tests before
    usage = httpx.post(server.base_url + "/chat/completions", headers=auth, json=body, timeout=120).json()["usage"]
    httpx.post(server.base_url + "/chat/completions", headers={"Authorization": "Bearer er-wrong"}, json=body)
    httpx.get(server.base_url + "/models", headers=auth)
    httpx.get(server.url + "/health")  # polled by the page: not logged
    wait_for(lambda: log.exists() and len(log.read_text().splitlines()) >= before + 3, 10, "three access log lines")
    lines = [json.loads(line) for line in log.read_text().splitlines()[before:]]
    assert [(x["method"], x["path"], x["status"]) for x in lines] == [
        ("POST", "/v1/chat/completions", 200),
        ("POST", "/v1/chat/completions", 401),
        ("GET", "/v1/models", 200),
    ]
    ok = lines[0]
    # the answer is sampled (no temperature given): it may end before max_tokens, so the log must say what it said
    assert ok["model"] == MODEL_ID and ok["completion_tokens"] == usage["completion_tokens"] > 0 and ok["ttft_ms"] > 0
    assert ok["key"].startswith("test-")  # the key's name
    text = log.read_text()
    assert server.key not in text and "er-wrong" not in text and server.key[:10] not in text


def test_an_answer_in_flight_at_sigterm_completes(make_server):
    server: Server = make_server("--drain-timeout", "60")
    auth = {"Authorization": f"Bearer {server.key}"}
    body = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 120,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events: list[str] = []
    started = threading.Event()

    def read() -> None:
        with httpx.stream("POST", server.base_url + "/chat/completions", headers=auth, json=body, timeout=120) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    started.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert started.wait(60)
    server.proc.send_signal(signal.SIGTERM)
    reader.join(120)
    assert events[-1] == "[DONE]"  # not cut short: the stream ended as streams end
    chunks = [json.loads(e) for e in events[:-1]]
    finished = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finished in (["length"], ["stop"])
    assert chunks[-1]["usage"]["completion_tokens"] > 1
    assert server.proc.wait(60) in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
