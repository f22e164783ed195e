"""The embedder: a context on a model's weights that pools each sequence of a batch into one vector.

Many inputs go into one ``llama_decode``, each its own sequence; the KV cache (when the model has one) is
shared by them and cleared before each batch. Runs on whichever thread its engine gives it, one call at a time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import llama_cpp as L
import numpy as np

from edge_run.engine.llama.context import Batch
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
        self._batch = Batch(n_batch)

    def set_threads(self, threads: int) -> None:
        L.llama_set_n_threads(self._ptr, threads, threads)

    def run(self, sequences: list[list[int]]) -> list[np.ndarray]:
        """One pooled output per sequence: a vector, or a reranker's scores (its first is the relevance)."""
        if len(sequences) > self.n_seq or sum(map(len, sequences)) > self.n_batch:
            raise EngineFailure("an embedding batch larger than its context")
        batch = self._batch
        batch.clear()
        for seq, tokens in enumerate(sequences):
            for pos, token in enumerate(tokens):
                batch.add(token, pos, seq, True)  # every token an output, as llama.cpp wants for pooling
        if self._mem:
            L.llama_memory_clear(self._mem, True)
        batch._b.n_tokens = batch.n
        if L.llama_decode(self._ptr, batch._b) != 0:
            raise EngineFailure("embedding decode failed")
        out = []
        for seq in range(len(sequences)):
            ptr = L.llama_get_embeddings_seq(self._ptr, seq)
            if not ptr:
                raise EngineFailure("the model returned no pooled embedding")
            out.append(np.ctypeslib.as_array(ptr, shape=(self.n_out,)).astype(np.float64))
        return out

    def close(self) -> None:
        self._batch.close()
        if self._ptr:
            L.llama_free(self._ptr)
            self._ptr = None
