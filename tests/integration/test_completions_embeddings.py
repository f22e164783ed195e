"""Legacy completions, embeddings and the message shapes users really send."""

from __future__ import annotations

import base64
import math
import struct

import httpx
import openai
import pytest

from tests.support import MODEL_ID

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)


def test_completion_shape_and_stream_agree(client):
    kwargs = dict(model=MODEL_ID, prompt="The capital of France is", max_tokens=8, temperature=0)
    r = client.completions.create(**kwargs)
    assert r.object == "text_completion"
    assert r.id.startswith("cmpl-")
    assert r.choices[0].text
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **kwargs) if c.choices)
    assert streamed == r.choices[0].text


def test_completion_echo_prompt_list_and_logprobs(client):
    r = client.completions.create(model=MODEL_ID, prompt=["One, two,", "A, B,"], max_tokens=4, temperature=0, echo=True)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].text.startswith("One, two,") and r.choices[1].text.startswith("A, B,")
    lp = client.completions.create(model=MODEL_ID, prompt="Hello", max_tokens=3, temperature=0, logprobs=2).choices[0]
    assert len(lp.logprobs.tokens) == 3 and "".join(lp.logprobs.tokens) == lp.text
    assert all(len(top) == 2 for top in lp.logprobs.top_logprobs)
    assert lp.logprobs.text_offset[0] == 0


def test_completion_refuses_suffix(server):
    r = httpx.post(
        server.base_url + "/completions",
        json={"model": MODEL_ID, "prompt": "def f(", "suffix": "return x"},
        headers={"Authorization": f"Bearer {server.key}"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "suffix"


def test_embeddings_are_unit_vectors_and_base64_matches(client, server):
    e = client.embeddings.create(model=MODEL_ID, input=["hello world", "goodbye moon"], encoding_format="float")
    assert [d.index for d in e.data] == [0, 1]
    first = e.data[0].embedding
    assert len(first) > 100
    assert math.isclose(sum(x * x for x in first), 1.0, rel_tol=1e-4)
    assert e.data[0].embedding != e.data[1].embedding
    assert e.usage.prompt_tokens > 0
    raw = httpx.post(
        server.base_url + "/embeddings",
        json={"model": MODEL_ID, "input": "hello world", "encoding_format": "base64"},
        headers={"Authorization": f"Bearer {server.key}"},
    ).json()
    blob = base64.b64decode(raw["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(blob) // 4}f", blob)
    assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(decoded, first, strict=True))


def test_embeddings_for_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input="x")


def test_final_assistant_message_is_continued(client):
    r = client.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": "Write a poem."}, {"role": "assistant", "content": "Roses are red,"}],
        max_tokens=8,
        temperature=0,
    )
    fresh = client.chat.completions.create(
        model=MODEL_ID, messages=[{"role": "user", "content": "Write a poem."}], max_tokens=8, temperature=0
    )
    assert r.choices[0].message.content
    assert not r.choices[0].message.content.startswith("Roses are red,")
    assert r.choices[0].message.content != fresh.choices[0].message.content


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Are you there?"}],
        [{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}],
        [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}],
    ],
)
def test_unusual_message_shapes_are_answered(client, messages):
    r = client.chat.completions.create(model=MODEL_ID, messages=messages, max_tokens=4, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")
