"""Sampling inside the decode graph (``device_sampling``): on by default for a model offloaded whole to
a GPU, forced on here on the CPU, where llama.cpp runs the same sampler graph. Greedy answers must not
change, through slot moves (a moved slot's sampler is set up again for its new sequence) and with
penalties and logit bias in the chain; grammars and log-probabilities keep sampling on the host."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support import MODEL_ID, Server, set_up, start_server, stream_in_slot_order

pytestmark = pytest.mark.integration

# slots 0, 1 and 2 in this order; b finishes first, and the engine moves c's stream into b's slot
BODIES = {
    "a": {"messages": [{"role": "user", "content": "Tell me one fact about cats."}], "max_tokens": 60},
    "b": {
        "messages": [{"role": "user", "content": "Tell me one fact about bread."}],
        "max_tokens": 6,
        "frequency_penalty": 0.4,
    },
    "c": {
        "messages": [{"role": "user", "content": "Tell me one fact about trains."}],
        "max_tokens": 60,
        "logit_bias": {"0": -100, "2": -100},
    },
}


def answers(server) -> dict[str, str]:
    return stream_in_slot_order(server, {name: {"temperature": 0, **body} for name, body in BODIES.items()})


def _sampling_on_the(where: str, tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Server]:
    home = tmp_path_factory.mktemp(f"{where}-sampling")
    set_up(home, "models", "add", str(model_path), "--id", MODEL_ID)
    env = {"EDGE_RUN_DEVICE_SAMPLING": "true" if where == "device" else "false"}
    server = start_server(home, "--model", MODEL_ID, "--slots", "4", env=env)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Server]:
    """Sampling on the host (the CPU default)."""
    yield from _sampling_on_the("host", tmp_path_factory, model_path)


@pytest.fixture(scope="module")
def device(tmp_path_factory: pytest.TempPathFactory, model_path: Path) -> Iterator[Server]:
    """Sampling forced into the decode graph."""
    yield from _sampling_on_the("device", tmp_path_factory, model_path)


@pytest.mark.cpu_numerics  # on a GPU, two servers' batches need not line up row for row
def test_greedy_answers_are_the_same_sampled_on_the_device(host: Server, device: Server):
    [model] = device.health()["models"]
    assert model["device_sampling"] is True
    assert host.health()["models"][0]["device_sampling"] is False

    assert answers(device) == answers(host)
    assert device.health()["models"][0]["slot_moves"] > 0  # the moved slot's sampler was set up again


def test_logprobs_and_grammars_still_work_with_device_sampling(device: Server):
    client = openai.OpenAI(base_url=device.base_url, api_key=device.key, max_retries=0)
    messages = [{"role": "user", "content": "Say hello."}]
    r = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=5, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens >= 1  # one per token
    assert all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in content)
    r = client.chat.completions.create(
        model=MODEL_ID, messages=messages, max_tokens=40, temperature=0, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(r.choices[0].message.content or ""), dict)
    r = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=5, n=3, temperature=1.0, seed=3)
    assert [c.index for c in r.choices] == [0, 1, 2] and all(c.message.content for c in r.choices)
