"""The embedder: a context on a model's weights that pools each sequence of a batch into one vector.

Many inputs go into one ``llama_decode``, each its own sequence; the KV cache (when the model has one) is
shared by them and cleared before each batch. Runs on whichever thread its engine gives it, one call at a time.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import llama_cpp as L
import numpy as np

from edge_run.errors import EngineFailure

if TYPE_CHECKING:
    from edge_run.engine.llama.model import Model

__all__ = ["Embedder"]

RANK = L.LLAMA_POOLING_TYPE_RANK


class Embedder:
    """Pools with ``pooling`` (llama.cpp's type; -1: the model's own); ``n_batch`` tokens in ``n_seq`` sequences at most
    per :meth:`run`. A sequence must fit one micro-batch whole: mean, CLS and non-causal models need all of it."""

    def __init__(self, model: Model, *, pooling: int, n_batch: int, n_seq: int, threads: int) -> None:
        params = L.llama_context_default_params()
        params.n_ctx = n_batch
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        params.kv_unified = True  # the sequences share the cache's cells: each may be as long as the batch
        params.n_threads = threads
        params.n_threads_batch = threads
        params.embeddings = True
        params.pooling_type = pooling
        params.no_perf = True
        self._ptr = L.llama_init_from_model(model.ptr, params)
        if not self._ptr:
            raise EngineFailure("could not create an embedding context (out of memory?)")
        self._mem = L.llama_get_memory(self._ptr)  # None for models without a KV cache (BERT...)
        self.pooling = L.llama_pooling_type(self._ptr)
        self.n_out = L.llama_model_n_cls_out(model.ptr) if self.pooling == RANK else L.llama_model_n_embd_out(model.ptr)
        self.n_batch, self.n_seq = n_batch, n_seq
        self._batch = _ArrayBatch(n_batch)

    def set_threads(self, threads: int) -> None:
        L.llama_set_n_threads(self._ptr, threads, threads)

    def run(self, sequences: list[list[int]]) -> list[np.ndarray]:
        """One pooled output per sequence: a vector, or a reranker's scores (its first is the relevance)."""
        if len(sequences) > self.n_seq or sum(map(len, sequences)) > self.n_batch:
            raise EngineFailure("an embedding batch larger than its context")
        batch = self._batch.fill(sequences)
        if self._mem:
            L.llama_memory_clear(self._mem, True)
        if L.llama_decode(self._ptr, batch) != 0:
            raise EngineFailure("embedding decode failed")
        out = []
        for seq in range(len(sequences)):
            ptr = L.llama_get_embeddings_seq(self._ptr, seq)
            if not ptr:
                raise EngineFailure("the model returned no pooled embedding")
            out.append(np.ctypeslib.as_array(ptr, shape=(self.n_out,)).astype(np.float64))
        return out

    def close(self) -> None:
        if self._ptr:
            L.llama_free(self._ptr)
            self._ptr = None


class _ArrayBatch:
    """A ``llama_batch`` over numpy arrays, filled a whole batch at a time (not a token at a time): each token
    in one sequence, and every token an output, as llama.cpp wants for pooling."""

    def __init__(self, capacity: int) -> None:
        self.tokens = np.zeros(capacity, dtype=np.int32)
        self.positions = np.zeros(capacity, dtype=np.int32)
        self.seqs = np.zeros(capacity, dtype=np.int32)
        self._ones = np.ones(capacity, dtype=np.int32)
        self._outputs = np.ones(capacity, dtype=np.int8)
        int32_p = ctypes.POINTER(ctypes.c_int32)
        base = self.seqs.ctypes.data
        self._seq_ptrs = (int32_p * capacity)(*(ctypes.cast(base + 4 * i, int32_p) for i in range(capacity)))
        self._b = L.llama_batch(
            n_tokens=0,
            token=self.tokens.ctypes.data_as(int32_p),
            embd=None,
            pos=self.positions.ctypes.data_as(int32_p),
            n_seq_id=self._ones.ctypes.data_as(int32_p),
            seq_id=self._seq_ptrs,
            logits=self._outputs.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )

    def fill(self, sequences: list[list[int]]) -> L.llama_batch:
        lengths = [len(s) for s in sequences]
        n = sum(lengths)
        self.tokens[:n] = np.fromiter((t for s in sequences for t in s), dtype=np.int32, count=n)
        self.positions[:n] = np.concatenate([np.arange(k, dtype=np.int32) for k in lengths])
        self.seqs[:n] = np.repeat(np.arange(len(sequences), dtype=np.int32), lengths)
        self._b.n_tokens = n
        return self._b
