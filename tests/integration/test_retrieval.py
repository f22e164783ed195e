"""Embedding and reranker models through the real server, checked against llama-cpp-python's own embedder.

The models are tiny random-weight GGUFs in real layouts (``bench/synth.py embed-cls|embed-last|rerank``): a BERT
embedder with CLS pooling, a Qwen3-style decoder embedder with last-token pooling, and a BERT cross-encoder
with rank pooling. The oracle is llama-cpp-python's high-level ``Llama(embedding=True)`` on the same files,
with flash attention on as edge-run and llama-server run it: an implementation no one here wrote.
"""

from __future__ import annotations

import base64
import struct
import threading
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from tests.support import MODEL_ID, oracle_llama, set_up, share_of_cores, start_server

pytestmark = pytest.mark.integration

THREADS = share_of_cores()  # the server and the oracles alike
TEXTS = [
    "the cat sat on the mat",
    "a quick brown fox jumps over the lazy dog",
    "hello world",
    "numbers like 42 and symbols like % are pieces too",
    "rain",
]
QUERY = "where did the cat sit"
LONG = "word " * 700  # more than the BERT models' 512 positions


@pytest.fixture(scope="module")
def server(tmp_path_factory, retrieval_models, model_path):
    home = tmp_path_factory.mktemp("retrieval")
    set_up(home, "models", "add", str(model_path), "--id", MODEL_ID)
    (home / "config").mkdir(exist_ok=True)
    (home / "config" / "config.toml").write_text(
        f'[[model]]\nid = "bge/cls"\npath = "{retrieval_models["embed-cls"]}"\n'
        'query_prefix = "search_query: "\ndocument_prefix = "search_document: "\n'
        f'[[model]]\nid = "qwen3/embed"\npath = "{retrieval_models["embed-last"]}"\ndimensions = [32, 64, 128]\n'
        f'[[model]]\nid = "bge/rerank"\npath = "{retrieval_models["rerank"]}"\n'
    )
    srv = start_server(home, "--threads", str(THREADS), "--slots", "2", "--ctx", "1024", "--max-loaded", "4")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)


def oracle(path: Path, pooling: str):
    import llama_cpp

    kind = {"cls": llama_cpp.LLAMA_POOLING_TYPE_CLS, "last": llama_cpp.LLAMA_POOLING_TYPE_LAST}
    kind |= {"mean": llama_cpp.LLAMA_POOLING_TYPE_MEAN, "rank": llama_cpp.LLAMA_POOLING_TYPE_RANK}
    return oracle_llama(
        path, embedding=True, pooling_type=kind[pooling], flash_attn=True, n_threads=THREADS,
        n_ctx=512, n_batch=512, n_ubatch=512, n_seq_max=8, verbose=False,
    )  # fmt: skip


def cosine_distance(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return 1.0 - float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.parametrize(
    ("model", "synth", "pooling"), [("bge/cls", "embed-cls", "cls"), ("qwen3/embed", "embed-last", "last")]
)
def test_embedding_models_pool_as_the_oracle_does(client, retrieval_models, model, synth, pooling):
    mine = client.embeddings.create(model=model, input=TEXTS)  # the SDK asks for base64 and decodes it
    assert [d.index for d in mine.data] == list(range(len(TEXTS)))
    reference = oracle(retrieval_models[synth], pooling).embed(TEXTS)
    for i, got in enumerate(mine.data):
        assert len(got.embedding) == len(reference[i]) == 128
        assert np.isclose(np.linalg.norm(got.embedding), 1.0, atol=1e-5)
        distances = [cosine_distance(got.embedding, want) for want in reference]
        # random weights make every text's vector alike (about 1e-4 apart): each must be nearest its own
        assert distances[i] < 1e-4 and distances[i] < min(d for j, d in enumerate(distances) if j != i) / 100
    assert mine.usage.prompt_tokens == sum(len(oracle_tokens) for oracle_tokens in _tokens(retrieval_models[synth]))


def _tokens(path: Path) -> list[list[int]]:
    llm = oracle(path, "mean")
    return [llm.tokenize(t.encode()) for t in TEXTS]


def test_a_chat_model_still_embeds_by_mean_pooling(client, model_path):
    mine = client.embeddings.create(model=MODEL_ID, input=TEXTS[:3], encoding_format="float")
    reference = oracle(model_path, "mean").embed(TEXTS[:3])
    assert all(cosine_distance(g.embedding, w) < 1e-4 for g, w in zip(mine.data, reference, strict=True))


def test_a_vector_barely_depends_on_what_it_was_packed_with(client):
    """Packed with 60 others, an input's vector moves by rounding only: a wider batch takes other matmul kernels."""
    alone = client.embeddings.create(model="bge/cls", input=TEXTS[2], encoding_format="float").data[0].embedding
    crowd = [f"filler text number {i} with some words" for i in range(60)]
    packed = client.embeddings.create(model="bge/cls", input=[*crowd, TEXTS[2]], encoding_format="float")
    assert cosine_distance(packed.data[-1].embedding, alone) < 1e-6
    assert cosine_distance(packed.data[-1].embedding, packed.data[0].embedding) > 1e-5


def test_token_arrays_embed_as_their_text(client, retrieval_models):
    ids = oracle(retrieval_models["embed-last"], "last").tokenize(TEXTS[0].encode())
    by_text = client.embeddings.create(model="qwen3/embed", input=TEXTS[0], encoding_format="float").data[0]
    for given in (ids, [ids]):
        by_ids = client.embeddings.create(model="qwen3/embed", input=given, encoding_format="float").data[0]
        assert cosine_distance(by_ids.embedding, by_text.embedding) < 1e-6


def test_matryoshka_dimensions_cut_and_renormalise(client):
    full = client.embeddings.create(model="qwen3/embed", input=TEXTS[0], encoding_format="float").data[0].embedding
    short = client.embeddings.create(model="qwen3/embed", input=TEXTS[0], dimensions=64).data[0].embedding
    assert len(short) == 64 and np.isclose(np.linalg.norm(short), 1.0, atol=1e-5)
    assert cosine_distance(short, full[:64]) < 1e-6


def test_instruction_prefixes_only_when_asked(client):
    asked = client.embeddings.create(model="bge/cls", input=TEXTS[0], extra_body={"input_type": "query"})
    spelled = client.embeddings.create(model="bge/cls", input="search_query: " + TEXTS[0])
    plain = client.embeddings.create(model="bge/cls", input=TEXTS[0])
    assert cosine_distance(asked.data[0].embedding, spelled.data[0].embedding) < 1e-6
    assert cosine_distance(asked.data[0].embedding, plain.data[0].embedding) > 1e-5


def test_rerank_scores_are_the_oracles_and_the_order_follows_them(server, retrieval_models):
    headers = {"Authorization": f"Bearer {server.key}"}
    body = {"model": "bge/rerank", "query": QUERY, "documents": TEXTS, "return_documents": True}
    r = httpx.post(f"{server.url}/v1/rerank", json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert sorted(x["index"] for x in results) == list(range(len(TEXTS)))
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    assert all(x["document"]["text"] == TEXTS[x["index"]] for x in results)
    # the oracle scores the same (query, document) pairs: llama-server's [CLS] query [SEP] document [SEP]
    llm = oracle(retrieval_models["rerank"], "rank")
    q = llm.tokenize(QUERY.encode(), add_bos=False)
    pairs = {t: [llm.token_bos(), *q, llm.token_eos(), *llm.tokenize(t.encode(), add_bos=False), llm.token_eos()]
             for t in TEXTS}  # fmt: skip
    llm.tokenize = lambda text, *a, **k: pairs[text.decode()]  # type: ignore[method-assign]
    want = {i: float(v[0]) for i, v in enumerate(llm.embed(TEXTS))}
    assert all(abs(x["relevance_score"] - want[x["index"]]) < 1e-4 for x in results)
    assert r.json()["usage"]["prompt_tokens"] == sum(map(len, pairs.values()))
    top = httpx.post(f"{server.url}/rerank", json={**body, "top_n": 2}, headers=headers, timeout=60).json()
    assert [x["index"] for x in top["results"]] == [x["index"] for x in results[:2]]


def test_langchain_embeds_documents_and_queries(server):
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(
        model="bge/cls", base_url=server.base_url, api_key=server.key, check_embedding_ctx_length=False
    )  # check_embedding_ctx_length would tokenize with tiktoken, which downloads its tables
    docs = emb.embed_documents(TEXTS[:2])
    query = emb.embed_query(TEXTS[0])
    assert len(docs) == 2 and len(query) == 128
    assert cosine_distance(docs[0], query) < 1e-6


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/embeddings", {"model": "bge/cls", "input": ["fine", LONG]}, 400, "input"),
        ("/v1/embeddings", {"model": "bge/cls", "input": ""}, 400, "input"),
        ("/v1/embeddings", {"model": "bge/cls", "input": ["x"] * 10_000}, 400, "input"),
        ("/v1/embeddings", {"model": "bge/cls", "input": "x", "dimensions": 64}, 400, "dimensions"),
        ("/v1/embeddings", {"model": "bge/cls", "input": [[1, 10**9]]}, 400, "input"),
        ("/v1/embeddings", {"model": "bge/rerank", "input": "x"}, 400, "model"),
        ("/v1/chat/completions", {"model": "bge/cls", "messages": [{"role": "user", "content": "x"}]}, 400, "model"),
        ("/v1/rerank", {"model": "bge/rerank", "query": "q", "documents": []}, 400, "documents"),
        ("/v1/rerank", {"model": "bge/rerank", "query": "q", "documents": [LONG]}, 400, "documents"),
        ("/rerank", {"model": "qwen3/embed", "query": "q", "documents": ["d"]}, 400, "model"),
    ],
)
def test_bad_retrieval_requests_are_4xx_and_the_server_keeps_serving(server, client, path, body, status, param):
    r = httpx.post(server.url + path, json=body, headers={"Authorization": f"Bearer {server.key}"}, timeout=60)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    if "[1]" in str(body) or body.get("documents") == [LONG]:
        assert "[" in error["message"]  # it names the input
    assert client.embeddings.create(model="bge/cls", input="still here").data[0].embedding


def test_truncate_embeds_an_input_longer_than_the_model_takes(server):
    headers = {"Authorization": f"Bearer {server.key}"}
    r = httpx.post(
        f"{server.url}/v1/embeddings", json={"model": "bge/cls", "input": LONG, "truncate": True}, headers=headers
    )
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 512
    body = {"model": "bge/rerank", "query": "q", "documents": [LONG, "short"], "truncate": True}
    r = httpx.post(f"{server.url}/v1/rerank", json=body, headers=headers, timeout=60)
    assert r.status_code == 200 and len(r.json()["results"]) == 2


def test_an_embedding_burst_on_a_chat_model_leaves_its_answers_unchanged(client):
    """Embedding batches run between the generation steps of the same model: the answer is the one it gives alone.
    The burst (600 tokens) goes in batches of a prompt block while the stream generates: about ten of its steps have one
    before them."""
    ask = dict(model=MODEL_ID, messages=[{"role": "user", "content": "Count to twenty."}], max_tokens=48, temperature=0)
    alone = client.chat.completions.create(**ask).choices[0].message.content
    burst: list[int] = []
    thread = threading.Thread(
        target=lambda: burst.append(len(client.embeddings.create(model=MODEL_ID, input=TEXTS * 20).data))
    )
    stream = client.chat.completions.create(**ask, stream=True)
    thread.start()
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    thread.join()
    assert burst == [len(TEXTS) * 20]
    assert text == alone


def test_models_list_their_capabilities(client):
    caps = {m.id: m.capabilities for m in client.models.list().data}  # type: ignore[attr-defined]
    assert caps["bge/cls"] == ["embedding"] and caps["qwen3/embed"] == ["embedding"]
    assert caps["bge/rerank"] == ["rerank"] and caps[MODEL_ID] == ["chat", "embedding"]


def test_base64_is_the_float_vector(server, client):
    floats = client.embeddings.create(model="bge/cls", input=TEXTS[0], encoding_format="float").data[0].embedding
    raw = httpx.post(
        f"{server.url}/v1/embeddings",
        json={"model": "bge/cls", "input": TEXTS[0], "encoding_format": "base64"},
        headers={"Authorization": f"Bearer {server.key}"},
    ).json()
    blob = base64.b64decode(raw["data"][0]["embedding"])
    assert np.allclose(struct.unpack(f"<{len(blob) // 4}f", blob), floats, atol=1e-6)


def test_ollamas_rerank_route_answers_as_v1_and_errs_in_ollamas_shape(server):
    headers = {"Authorization": f"Bearer {server.key}"}
    body = {"model": "bge/rerank", "query": QUERY, "documents": TEXTS, "top_n": 3}
    mine = httpx.post(f"{server.url}/api/rerank", json=body, headers=headers, timeout=60)
    assert mine.status_code == 200, mine.text
    assert mine.json()["results"] == httpx.post(f"{server.url}/v1/rerank", json=body, headers=headers).json()["results"]
    bad = httpx.post(f"{server.url}/api/rerank", json={**body, "documents": []}, headers=headers, timeout=60)
    assert bad.status_code == 400 and set(bad.json()) == {"error"}
