"""Sampling inside the decode graph (``device_sampling``): on by default for a model offloaded whole to
a GPU, forced on here on the CPU, where llama.cpp runs the same sampler graph. Greedy answers must not
change, through slot moves (a moved slot's sampler is set up again for its new sequence) and with
penalties and logit bias in the chain; grammars and log-probabilities keep sampling on the host."""

from __future__ import annotations

import json

import openai
import pytest

from tests.conftest import MODEL_ID, stream_in_slot_order

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


@pytest.mark.cpu_numerics  # on a GPU, two servers' batches need not line up row for row
def test_greedy_answers_are_the_same_sampled_on_the_device(make_server):
    host = make_server("--slots", "4", env={"EDGE_RUN_DEVICE_SAMPLING": "false"})
    device = make_server("--slots", "4", env={"EDGE_RUN_DEVICE_SAMPLING": "true"})
    [model] = device.health()["models"]
    assert model["device_sampling"] is True
    assert host.health()["models"][0]["device_sampling"] is False

    assert answers(device) == answers(host)
    assert device.health()["models"][0]["slot_moves"] > 0  # the moved slot's sampler was set up again


def test_logprobs_and_grammars_still_work_with_device_sampling(make_server):
    server = make_server(env={"EDGE_RUN_DEVICE_SAMPLING": "true"})
    client = openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
    messages = [{"role": "user", "content": "Say hello."}]
    r = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=5, logprobs=True, top_logprobs=2)
    assert r.choices[0].logprobs is not None and len(r.choices[0].logprobs.content) >= 1
    r = client.chat.completions.create(
        model=MODEL_ID, messages=messages, max_tokens=40, temperature=0, response_format={"type": "json_object"}
    )
    json.loads(r.choices[0].message.content or "")
    r = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=5, n=3, temperature=1.0, seed=3)
    assert len(r.choices) == 3
