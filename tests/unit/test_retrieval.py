"""Embedding and rerank requests without a model: packing, input shapes, Matryoshka, ranking, the routes' checks."""

from __future__ import annotations

import asyncio
import base64
import struct
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar.testing import TestClient

from edge_run.api.app import create_app
from edge_run.engine import EngineOptions
from edge_run.engine.embedding import MAX_SEQUENCES, Pooler, take
from edge_run.engine.threads import CoreShare
from edge_run.errors import ContextLengthExceeded, InvalidRequest
from edge_run.keys import KeyStore
from edge_run.models.registry import ModelRegistry, ModelSpec
from edge_run.server import app_services
from edge_run.serving.retrieval import check_dimensions, embedding_inputs, ranked, shortened


def pack(lengths: list[int], max_tokens: int, max_seqs: int) -> list[list[int]]:
    groups, start = [], 0
    while start < len(lengths):
        end = take(lengths, start, max_tokens, max_seqs)
        groups.append(list(range(start, end)))
        start = end
    return groups


def test_batches_keep_order_and_fill_up_to_tokens_and_sequences():
    assert pack([3, 3, 3, 3], 6, 8) == [[0, 1], [2, 3]]
    assert pack([10, 2, 2], 6, 8) == [[0], [1, 2]]  # one input longer than a batch goes alone
    assert pack([1] * 5, 100, 2) == [[0, 1], [2, 3], [4]]
    groups = pack([7] * 1000, 512, MAX_SEQUENCES)
    assert [i for g in groups for i in g] == list(range(1000))
    assert all(len(g) * 7 <= 512 for g in groups)


SPEC = ModelSpec("e", Path("e.gguf"), "test", kind="embedding", query_prefix="search_query: ", dimensions=(64, 256))


def test_embedding_inputs_take_texts_token_ids_and_token_arrays():
    assert embedding_inputs("hi", None, SPEC) == ["hi"]
    assert embedding_inputs(["a", "b"], "query", SPEC) == ["search_query: a", "search_query: b"]
    assert embedding_inputs([1, 2, 3], None, SPEC) == [[1, 2, 3]]
    assert embedding_inputs([[1, 2], [3]], None, SPEC) == [[1, 2], [3]]
    assert embedding_inputs(["a"], "document", None) == ["a"]  # an upstream gets the request as it is


@pytest.mark.parametrize(
    ("raw", "input_type", "param", "words"),
    [
        (["a", ""], None, "input", "input[1]"),
        ([[1], []], None, "input", "input[1]"),
        (["a", 1], None, "input", "mixes"),
        ([1, [2]], None, "input", "mixes"),
        ([[1, 2]], "query", "input_type", "token arrays"),
        (["a"], "document", "input_type", "no known document prefix"),
    ],
)
def test_bad_embedding_inputs_are_400s_that_say_what(raw, input_type, param, words):
    with pytest.raises(InvalidRequest) as err:
        embedding_inputs(raw, input_type, SPEC)
    assert err.value.param == param and words in err.value.message


def test_dimensions_only_for_matryoshka_models_and_within_their_sizes():
    check_dimensions(None, ModelSpec("c", Path("c"), "test"))
    check_dimensions(128, SPEC)
    for spec, dims in ((ModelSpec("c", Path("c"), "test"), 8), (SPEC, 32), (SPEC, 512)):
        with pytest.raises(InvalidRequest) as err:
            check_dimensions(dims, spec)
        assert err.value.param == "dimensions"
    v = np.arange(1, 9, dtype=np.float64)
    short = shortened(v / np.linalg.norm(v), 3)
    assert np.allclose(short, np.array([1, 2, 3]) / np.linalg.norm([1, 2, 3]))
    assert shortened(v, None) is v


def test_ranked_is_highest_first_stable_and_cut_at_top_n():
    order = [(r.index, r.score) for r in ranked([0.5, 2.0, 0.5, -1.0], None)]
    assert order == [(1, 2.0), (0, 0.5), (2, 0.5), (3, -1.0)]
    assert [r.index for r in ranked([0.5, 2.0, 0.7], 2)] == [1, 2]


class FakeVocabModel:
    n_vocab = 50
    n_ctx_train = 16

    def tokenize(self, text: str) -> list[int]:
        return [1 + len(w) for w in text.split()] or [1]

    def pair_tokens(self, query: str, documents: list[str]) -> list[list[int]]:
        return [[1, *self.tokenize(query), 2, *self.tokenize(d), 2] for d in documents]


def test_a_burst_is_decoded_in_batches_each_its_own_call_on_the_model_thread():
    """On a chat model's engine thread, generation steps run between two calls: a burst stalls one batch at most."""
    calls: list[list[list[int]]] = []
    options = EngineOptions(ctx=64, threads=1, gpu_layers=0, slots=1, max_queue=1, batch=8, kind="embedding")
    pooler = Pooler(FakeVocabModel(), options, None, CoreShare(1))  # type: ignore[arg-type]

    async def run(fn: Any) -> Any:
        return fn()

    def decode(batch: list[list[int]]) -> list[np.ndarray]:
        calls.append(batch)
        return [np.array([float(len(s)), 1.0]) for s in batch]

    pooler._run, pooler._decode = run, decode  # type: ignore[method-assign]
    vectors, tokens = asyncio.run(pooler.embed(["a b c"] * 10, truncate=False))
    assert tokens == 30 and len(vectors) == 10 and len(calls) == 5
    assert all(sum(map(len, batch)) <= 8 for batch in calls)
    assert all(np.isclose(np.linalg.norm(v), 1.0) for v in vectors)
    assert pooler.limit == 16  # an embedder's inputs stop at its trained context
    with pytest.raises(ContextLengthExceeded) as err:
        asyncio.run(pooler.embed(["a", "w " * 20], truncate=False))
    assert err.value.param == "input" and "input[1]" in err.value.message
    vectors, tokens = asyncio.run(pooler.embed(["w " * 20], truncate=True))
    assert tokens == 16
    with pytest.raises(InvalidRequest, match="token id 99"):
        asyncio.run(pooler.embed([[1, 99]], truncate=False))
    scores, tokens = asyncio.run(pooler.scores("q", ["d1", "doc two"], truncate=False))
    assert scores == [5.0, 6.0] and tokens == 11
    calls.clear()
    pooler._busy, pooler._small = (lambda: True), 3  # streams are generating: batches of a prompt block at most
    asyncio.run(pooler.embed(["a b c"] * 4, truncate=False))
    assert [sum(map(len, batch)) for batch in calls] == [3, 3, 3, 3]


class FakeEmbedder:
    def __init__(self) -> None:
        self.threads: list[int] = []

    def set_threads(self, threads: int) -> None:
        self.threads.append(threads)

    def run(self, batch: list[list[int]]) -> list[np.ndarray]:
        return [np.ones(2) for _ in batch]


def test_an_embedder_takes_its_threads_from_the_cores_the_models_share():
    """A busy chat model on 2 cores leaves an embedding model 1 thread, not 2 more spinning threads."""
    cores = CoreShare(2)
    chat = cores.join()
    cores.set_active(chat, True)
    options = EngineOptions(ctx=64, threads=2, gpu_layers=0, slots=1, max_queue=1, batch=8, kind="embedding")
    pooler = Pooler(FakeVocabModel(), options, None, cores)  # type: ignore[arg-type]
    pooler._embedder = embedder = FakeEmbedder()  # type: ignore[assignment]
    pooler._decode([[1, 2]])
    cores.set_active(chat, False)
    pooler._decode([[1, 2]])
    assert embedder.threads == [1, 2]
    assert cores._active == {} and cores._held == {}


def test_a_model_without_an_engine_thread_decodes_every_request_on_one_thread_of_its_own():
    """llama.cpp's OpenMP build keeps a worker team per calling thread: decodes that hop between the event loop's
    pool threads leave teams spinning against each other. Overlapping requests still run one at a time."""
    options = EngineOptions(ctx=64, threads=1, gpu_layers=0, slots=1, max_queue=1, batch=8, kind="embedding")
    pooler = Pooler(FakeVocabModel(), options, None, CoreShare(1))  # type: ignore[arg-type]
    seen: list[tuple[int, str]] = []
    running = [0]

    def decode(batch: list[list[int]]) -> list[np.ndarray]:
        running[0] += 1
        seen.append((running[0], threading.current_thread().name))
        time.sleep(0.01)
        running[0] -= 1
        return [np.ones(2) for _ in batch]

    pooler._decode = decode  # type: ignore[method-assign]

    async def burst() -> None:
        await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.001) for _ in range(4)))  # the pool has threads
        await asyncio.gather(*(pooler.embed(["a b"] * 3, truncate=False) for _ in range(6)))

    asyncio.run(burst())
    pooler.close()
    assert len(seen) == 6 and {n for n, _ in seen} == {1}
    assert {name for _, name in seen} == {seen[0][1]} and seen[0][1].startswith("edge-run-embed")


class FakeRetrieval:
    """An embedder or a reranker: vectors and scores that follow the inputs' lengths."""

    inflight = 0

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.loads = 0

    async def load(self) -> None:
        self.loads += 1

    async def close(self) -> None: ...

    def status(self) -> dict[str, Any]:
        return {}

    async def embed(self, inputs: list[Any], *, truncate: bool = False) -> tuple[list[np.ndarray], int]:
        vectors = [np.arange(1.0, 9.0) * (1 + len(x)) for x in inputs]
        return [v / np.linalg.norm(v) for v in vectors], sum(map(len, inputs))

    async def rerank(self, query: str, documents: list[str], *, truncate: bool = False) -> tuple[list[float], int]:
        return [float(query in d) + len(d) / 100 for d in documents], 7


@pytest.fixture
def http(tmp_path):
    keys = KeyStore(tmp_path / "keys.sqlite3")
    key, _ = keys.create()
    engines = {m: FakeRetrieval(m) for m in ("embedder", "reranker", "chat")}
    specs = [
        ModelSpec("embedder", Path("e.gguf"), "test", kind="embedding", dimensions=(2, 8), document_prefix="doc: "),
        ModelSpec("reranker", Path("r.gguf"), "test", kind="rerank"),
        ModelSpec("chat", Path("c.gguf"), "test"),
    ]
    registry = ModelRegistry(specs, lambda spec: engines[spec.id], cost=lambda spec: 0)
    with TestClient(create_app(app_services(registry, keys)), base_url="http://127.0.0.1") as client:
        client.headers["Authorization"] = f"Bearer {key}"
        yield client, engines


def test_models_say_what_each_serves(http):
    client, _ = http
    caps = {m["id"]: m["capabilities"] for m in client.get("/v1/models").json()["data"]}
    assert caps == {"embedder": ["embedding"], "reranker": ["rerank"], "chat": ["chat", "embedding"]}


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/v1/chat/completions", {"model": "embedder", "messages": [{"role": "user", "content": "hi"}]}, "an embed"),
        ("/v1/responses", {"model": "reranker", "input": "hi"}, "a rerank model"),
        ("/v1/messages", {"model": "embedder", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}, "a"),
        ("/v1/completions", {"model": "reranker", "prompt": "hi"}, "does not serve chat"),
        ("/v1/embeddings", {"model": "reranker", "input": "hi"}, "does not serve embedding"),
        ("/v1/rerank", {"model": "embedder", "query": "q", "documents": ["d"]}, "does not serve rerank"),
        ("/rerank", {"model": "chat", "query": "q", "documents": ["d"]}, "a chat model"),
    ],
)
def test_a_model_asked_for_what_it_does_not_serve_is_a_400_before_it_loads(http, path, body, words):
    client, engines = http
    r = client.post(path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert words in error["message"]
    if path != "/v1/messages":  # Anthropic's errors carry a type and a message only
        assert error["param"] == "model" and error["code"] == "model_not_supported"
    assert all(e.loads == 0 for e in engines.values())


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "reranker", "query": "q", "documents": []}, "documents"),
        ({"model": "reranker", "query": "", "documents": ["d"]}, "query"),
        ({"model": "reranker", "query": "q", "documents": ["d"], "top_n": 0}, "top_n"),
        ({"model": "embedder", "input": ["x"] * 10_000}, "input"),
        ({"model": "embedder", "input": ""}, "input"),
        ({"model": "embedder", "input": "x", "dimensions": 9}, "dimensions"),
        ({"model": "chat", "input": "x", "dimensions": 4}, "dimensions"),
        ({"model": "embedder", "input": "x", "input_type": "query"}, "input_type"),
    ],
)
def test_bad_retrieval_bodies_are_400s_naming_the_field_before_any_load(http, body, param):
    client, engines = http
    r = client.post("/v1/rerank" if "query" in body else "/v1/embeddings", json=body)
    assert r.status_code == 400, r.text
    assert param in (r.json()["error"]["param"] or r.json()["error"]["message"])
    assert all(e.loads == 0 for e in engines.values())


def test_rerank_orders_by_score_cuts_at_top_n_and_returns_documents_when_asked(http):
    client, _ = http
    docs = ["nothing here", {"text": "the cat is here"}, "cat"]
    for path in ("/v1/rerank", "/rerank"):
        r = client.post(path, json={"model": "reranker", "query": "cat", "documents": docs, "top_n": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "list" and body["model"] == "reranker" and body["usage"]["total_tokens"] == 7
        assert [x["index"] for x in body["results"]] == [1, 2]
        assert "document" not in body["results"][0]
    r = client.post("/rerank", json={"model": "reranker", "query": "cat", "documents": docs, "return_documents": True})
    assert [x["document"]["text"] for x in r.json()["results"]] == ["the cat is here", "cat", "nothing here"]


def test_matryoshka_dimensions_and_base64_and_the_document_prefix(http):
    client, _ = http
    body = {"model": "embedder", "input": ["ab", "c"], "dimensions": 3, "input_type": "document"}
    r = client.post("/v1/embeddings", json=body).json()
    first = r["data"][0]["embedding"]
    assert len(first) == 3 and np.isclose(np.linalg.norm(first), 1.0)
    assert r["usage"]["prompt_tokens"] == len("doc: ab") + len("doc: c")  # the prefix went to the model
    r = client.post("/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    decoded = struct.unpack("<3f", base64.b64decode(r["data"][0]["embedding"]))
    assert np.allclose(decoded, first, atol=1e-6)
