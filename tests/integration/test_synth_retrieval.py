"""bench/synth.py KIND --out DIR: tiny random-weight retrieval GGUFs (BERT CLS embedder, Qwen3 LAST embedder, BERT
reranker) in the layouts llama.cpp loads, with the metadata convert_hf_to_gguf.py writes for such models."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import oracle_llama, share_of_cores

gguf = pytest.importorskip("gguf")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import synth_retrieval as sr  # noqa: E402

pytestmark = pytest.mark.integration

POOLING = {"embed-cls": gguf.PoolingType.CLS, "embed-last": gguf.PoolingType.LAST, "rerank": gguf.PoolingType.RANK}
CLS_HEAD = {
    "cls.weight": ((sr.HIDDEN, sr.HIDDEN), "F16"),
    "cls.bias": ((sr.HIDDEN,), "F32"),
    "cls.output.weight": ((sr.HIDDEN, 1), "F16"),
    "cls.output.bias": ((1,), "F32"),
}


def fields(reader) -> dict[str, Any]:
    return {key: field.contents() for key, field in reader.fields.items()}


def layout(reader) -> dict[str, tuple[tuple[int, ...], str]]:
    return {t.name: (tuple(int(x) for x in t.shape), t.tensor_type.name) for t in reader.tensors}


@pytest.mark.parametrize("kind", ["embed-cls", "rerank"])
def test_the_bert_files_have_bert_s_layout_pooling_and_wordpiece_vocabulary(
    retrieval_models: dict[str, Path], kind: str
):
    reader = gguf.GGUFReader(retrieval_models[kind])
    kv = fields(reader)
    assert kv["general.architecture"] == "bert"
    assert kv["bert.pooling_type"] == POOLING[kind]
    assert kv["bert.attention.causal"] is False
    assert (kv["bert.context_length"], kv["bert.embedding_length"]) == (sr.BERT_CTX, sr.HIDDEN)
    assert kv["tokenizer.ggml.model"] == "bert"
    assert kv["tokenizer.ggml.token_type_count"] == 2
    tokens = kv["tokenizer.ggml.tokens"]
    assert tokens[:5] == list(sr.SPECIALS)
    assert 2000 < len(tokens) < 5000
    assert (kv["tokenizer.ggml.bos_token_id"], kv["tokenizer.ggml.eos_token_id"]) == (sr.CLS_ID, sr.SEP_ID)
    assert (kv["tokenizer.ggml.add_bos_token"], kv["tokenizer.ggml.add_eos_token"]) == (True, True)
    assert kv["tokenizer.ggml.add_sep_token"] is False
    for word in "the cat sat on the mat".split():  # whole words in the phantom-space form llama.cpp matches
        assert "\u2581" + word in tokens

    got = layout(reader)
    names = {gguf.TENSOR_NAMES[t] for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.BERT]}
    assert set(got) <= {n.format(bid=i) + s for n in names for i in range(sr.LAYERS) for s in (".weight", ".bias")}
    assert got["token_embd.weight"] == ((sr.HIDDEN, len(tokens)), "F16")
    assert got["position_embd.weight"] == ((sr.HIDDEN, sr.BERT_CTX), "F32")
    assert got["token_types.weight"] == ((sr.HIDDEN, 2), "F32")
    assert got[f"blk.{sr.LAYERS - 1}.layer_output_norm.bias"] == ((sr.HIDDEN,), "F32")
    head = {name: got[name] for name in CLS_HEAD if name in got}
    if kind == "rerank":
        assert head == CLS_HEAD
        assert kv["bert.classifier.output_labels"] == ["LABEL_0"]
    else:
        assert head == {}
        assert "bert.classifier.output_labels" not in kv


def test_the_qwen3_embedder_has_last_pooling_and_smollm2s_tokenizer_appending_eos(retrieval_models: dict[str, Path]):
    """Read through llama.cpp: GGUFReader takes ~4 s over the 49k tokens and merges."""
    from llama_cpp import Llama

    vocab = Llama(model_path=str(retrieval_models["embed-last"]), vocab_only=True, verbose=False)
    kv = vocab.metadata
    assert kv["general.architecture"] == "qwen3"
    assert int(kv["qwen3.pooling_type"]) == gguf.PoolingType.LAST
    assert "qwen3.attention.causal" not in kv  # llama.cpp's default: causal
    assert int(kv["qwen3.embedding_length"]) == sr.HIDDEN
    assert kv["tokenizer.ggml.model"] == "gpt2"
    assert kv["tokenizer.ggml.add_eos_token"] == "true"
    assert "tokenizer.chat_template" not in kv
    assert vocab.tokenize(b"the cat sat on the mat", add_bos=True)[-1] == vocab.token_eos()


def test_llama_cpp_tokenizes_english_to_words_between_cls_and_sep(retrieval_models: dict[str, Path]):
    from llama_cpp import Llama

    for kind in ("embed-cls", "rerank"):
        vocab = Llama(model_path=str(retrieval_models[kind]), vocab_only=True, verbose=False)
        ids = vocab.tokenize(b"The cat sat on the mat", add_bos=True)
        pieces = [vocab.detokenize([t], special=True).decode() for t in ids]
        assert pieces == ["[CLS]", " the", " cat", " sat", " on", " the", " mat", "[SEP]"]


@pytest.mark.parametrize("kind", sr.KINDS)
def test_llama_cpp_pools_finite_outputs_that_differ_between_texts(retrieval_models: dict[str, Path], kind: str):
    model = oracle_llama(
        retrieval_models[kind], embedding=True, pooling_type=POOLING[kind], n_ctx=512, n_batch=512,
        n_ubatch=512, n_seq_max=8, n_threads=share_of_cores(), verbose=False,
    )  # fmt: skip
    first, second = model.embed(["hello world", "the cat sat on the mat"])
    if kind == "rerank":  # RANK: one score per sequence, the first float
        first, second = first[:1], second[:1]
    else:
        assert len(first) == len(second) == sr.HIDDEN
        assert len(set(first)) > 1 and len(set(second)) > 1  # not constant
    assert all(math.isfinite(x) for x in first + second)
    assert first != second
