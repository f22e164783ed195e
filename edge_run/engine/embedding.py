"""Embeddings and rerank scores as the event loop sees them: inputs tokenized, checked, packed and pooled.

Inputs are packed into batches, each one ``llama_decode`` of many sequences (:func:`pack`). Each batch is
its own call on the thread that owns the model: on a chat model's engine thread, generation steps run
between two batches, so an embedding burst stalls the generating slots for one batch at a time.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from edge_run.errors import ContextLengthExceeded, InvalidRequest
from edge_run.gguf import POOLINGS

if TYPE_CHECKING:
    from edge_run.engine.llama.embedder import Embedder
    from edge_run.engine.llama.model import Model
    from edge_run.engine.threads import CoreShare
    from edge_run.engine.types import EngineOptions

__all__ = ["MAX_SEQUENCES", "Pooler", "pack", "serial"]

T = TypeVar("T")
Run = Callable[[Callable[[], Any]], Awaitable[Any]]
MAX_SEQUENCES = 128  # inputs in one decode at most (llama.cpp allows 256 sequences)


def pack(lengths: list[int], max_tokens: int, max_seqs: int) -> list[list[int]]:
    """The inputs' indices, in order, in groups of at most ``max_seqs`` inputs and ``max_tokens`` tokens
    (an input longer than that is a group alone)."""
    groups: list[list[int]] = []
    tokens = 0
    for i, n in enumerate(lengths):
        if not groups or len(groups[-1]) >= max_seqs or tokens + n > max_tokens:
            groups.append([])
            tokens = 0
        groups[-1].append(i)
        tokens += n
    return groups


def serial() -> Run:
    """A runner for a model without an engine thread: each call on a worker thread, one at a time."""
    lock = asyncio.Lock()

    async def run(fn: Callable[[], T]) -> T:
        async with lock:
            return await asyncio.to_thread(fn)

    return run


class Pooler:
    """Embeds texts or token arrays, or scores (query, document) pairs, with ``model``; ``run`` runs a call on
    the thread that owns the model. An input is at most ``limit`` tokens: the context, and for an encoder
    also its trained length (its position embeddings end there).

    Each batch takes its threads from ``cores`` as ``member`` (the engine's, or its own for a model without an
    engine thread), like a generation step: the loaded models together never run more threads than cores.
    """

    def __init__(
        self, model: Model, options: EngineOptions, run: Run, cores: CoreShare, member: int | None = None
    ) -> None:
        self.model = model
        self._options = options
        self._run = run
        self._cores = cores
        self._own = member is None  # then nothing else marks the member active or idle
        self._member = cores.join() if member is None else member
        self._embedder: Embedder | None = None
        chat = options.kind == "chat"
        self.limit = options.ctx if chat else min(options.ctx, model.n_ctx_train or options.ctx)
        pooling = options.pooling or ("mean" if chat else None)  # None: the GGUF's own
        self._pooling = POOLINGS[pooling] if pooling else -1

    async def embed(self, inputs: list[str] | list[list[int]], *, truncate: bool) -> tuple[list[np.ndarray], int]:
        """Unit vectors, one per input, and the tokens they took."""
        model = self.model
        if inputs and isinstance(inputs[0], str):
            token_lists = await asyncio.to_thread(lambda: [model.tokenize(str(t)) for t in inputs])
        else:
            token_lists = [self._checked_ids(i, list(t)) for i, t in enumerate(inputs)]  # type: ignore[arg-type]
        token_lists = [self._fitted(f"input[{i}]", t, truncate) for i, t in enumerate(token_lists)]
        pooled = await self._pool(token_lists)
        return [v / (float(np.linalg.norm(v)) or 1.0) for v in pooled], sum(map(len, token_lists))

    async def scores(self, query: str, documents: list[str], *, truncate: bool) -> tuple[list[float], int]:
        """A reranker's relevance score of each document to ``query`` (its raw output, as llama-server's),
        and the tokens they took."""
        pairs = await asyncio.to_thread(lambda: [self.model.pair_tokens(query, d) for d in documents])
        pairs = [self._fitted(f"documents[{i}]", t, truncate) for i, t in enumerate(pairs)]
        pooled = await self._pool(pairs)
        return [float(v[0]) for v in pooled], sum(map(len, pairs))

    def _checked_ids(self, i: int, ids: list[int]) -> list[int]:
        bad = next((t for t in ids if not 0 <= t < self.model.n_vocab), None)
        if bad is not None:
            raise InvalidRequest(f"input[{i}] has token id {bad}, not in this model's vocabulary", param="input")
        return ids

    def _fitted(self, name: str, tokens: list[int], truncate: bool) -> list[int]:
        param = name.split("[")[0]
        if not tokens:
            raise InvalidRequest(f"{name} is empty", param=param)
        if len(tokens) <= self.limit:
            return tokens
        if truncate:  # keep the last token: the EOS that last-token pooling reads
            return tokens[: self.limit - 1] + tokens[-1:]
        raise ContextLengthExceeded(
            f"{name} has {len(tokens)} tokens; this model takes at most {self.limit} per input "
            "(send `truncate: true` to cut longer ones)",
            param=param,
        )

    async def _pool(self, sequences: list[list[int]]) -> list[np.ndarray]:
        groups = pack([len(s) for s in sequences], self._options.batch, MAX_SEQUENCES)
        out: list[np.ndarray] = []
        for group in groups:  # one call each: a chat model's generation steps run between them
            batch = [sequences[i] for i in group]
            out += await self._run(functools.partial(self._decode, batch))
        return out

    def _decode(self, batch: list[list[int]]) -> list[np.ndarray]:
        cores, member = self._cores, self._member
        if self._own:
            cores.set_active(member, True)
        threads = cores.acquire(member, self._options.threads)
        try:
            embedder = self._embedder_now()
            embedder.set_threads(threads)
            return embedder.run(batch)
        finally:
            cores.release(member)
            if self._own:
                cores.set_active(member, False)

    def _embedder_now(self) -> Embedder:
        """The embedder, made on first use, on the model's thread."""
        if self._embedder is None:
            from edge_run.engine.llama.embedder import Embedder

            n_batch = max(self._options.batch, self.limit)
            self._embedder = Embedder(
                self.model, pooling=self._pooling, n_batch=n_batch, n_seq=MAX_SEQUENCES, threads=self._options.threads
            )
        return self._embedder

    def close(self) -> None:
        if self._embedder is not None:
            self._embedder.close()
