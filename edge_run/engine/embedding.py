"""Embeddings and rerank scores as the event loop sees them: inputs tokenized, checked, packed and pooled.

Inputs are packed into batches, each one ``llama_decode`` of many sequences (:func:`take`). Each batch is
its own call on the thread that owns the model: on a chat model's engine thread, generation steps run
between two batches, so an embedding burst stalls the generating slots for one batch at a time.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from edge_run.errors import ContextLengthExceeded, InvalidRequest
from edge_run.gguf import POOLINGS

if TYPE_CHECKING:
    from edge_run.engine.llama.embedder import Embedder
    from edge_run.engine.llama.model import Model
    from edge_run.engine.threads import CoreShare
    from edge_run.engine.types import EngineOptions

__all__ = ["MAX_SEQUENCES", "Pooler", "take"]

T = TypeVar("T")
Run = Callable[[Callable[[], Any]], Awaitable[Any]]
MAX_SEQUENCES = 128  # inputs in one decode at most (llama.cpp allows 256 sequences)


def take(lengths: list[int], start: int, max_tokens: int, max_seqs: int) -> int:
    """Where the batch that starts at input ``start`` ends: as many inputs as fit ``max_tokens`` tokens and
    ``max_seqs`` sequences, and at least one (an input longer than that is a batch alone)."""
    end, tokens = start, 0
    while end < len(lengths) and end - start < max_seqs and (end == start or tokens + lengths[end] <= max_tokens):
        tokens += lengths[end]
        end += 1
    return end


class Pooler:
    """Embeds texts or token arrays, or scores (query, document) pairs, with ``model``; ``run`` runs a call on
    the thread that owns the model, its engine thread. Without one (``run`` None: an embedder or a reranker)
    the pooler runs each request on a thread of its own, one request at a time. One thread, not the event
    loop's pool: llama.cpp's OpenMP build keeps a team of worker threads per calling thread, and decodes that
    hop between pool threads leave teams spinning against each other on the cores (rerank throughput 1.2-1.3x
    on one thread, measured on 2 cores). An input is at most ``limit`` tokens: the context, and for an encoder
    also its trained length (its position embeddings end there).

    Each batch takes its threads from ``cores`` as ``member`` (the engine's, or its own for a model without an
    engine thread), like a generation step: the loaded models together never run more threads than cores.
    While ``busy()`` (a chat model's slots are generating), a batch takes ``small`` tokens at most, a prompt
    block's worth, so that the streams beside it wait no longer than for a step that prefills; else ``--batch``.
    """

    def __init__(
        self,
        model: Model,
        options: EngineOptions,
        run: Run | None,
        cores: CoreShare,
        member: int | None = None,
        busy: Callable[[], bool] = lambda: False,
        small: int = 0,
    ) -> None:
        self.model = model
        self._busy = busy
        self._small = small or options.batch
        self._options = options
        self._own = run is None  # no engine thread: nothing else marks the member active or idle
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="edge-run-embed") if self._own else None
        self._run = run or self._on_own_thread
        self._cores = cores
        self._member = cores.join() if member is None else member
        self._embedder: Embedder | None = None
        chat = options.kind == "chat"
        self.limit = options.ctx if chat else min(options.ctx, model.n_ctx_train or options.ctx)
        pooling = options.pooling or ("mean" if chat else None)  # None: the GGUF's own
        self._pooling = POOLINGS[pooling] if pooling else -1

    async def embed(self, inputs: list[str] | list[list[int]], *, truncate: bool) -> tuple[list[np.ndarray], int]:
        """Unit vectors, one per input, and the tokens they took."""
        model = self.model

        def tokens() -> list[list[int]]:
            if inputs and isinstance(inputs[0], str):
                found = [model.tokenize(str(t)) for t in inputs]
            else:
                found = [self._checked_ids(i, list(t)) for i, t in enumerate(inputs)]  # type: ignore[arg-type]
            return [self._fitted(f"input[{i}]", t, truncate) for i, t in enumerate(found)]

        pooled, n_tokens = await self._pool(tokens)
        return [v / (float(np.linalg.norm(v)) or 1.0) for v in pooled], n_tokens

    async def scores(self, query: str, documents: list[str], *, truncate: bool) -> tuple[list[float], int]:
        """A reranker's relevance score of each document to ``query`` (its raw output, as llama-server's),
        and the tokens they took."""

        def tokens() -> list[list[int]]:
            pairs = self.model.pair_tokens(query, documents)
            return [self._fitted(f"documents[{i}]", t, truncate) for i, t in enumerate(pairs)]

        pooled, n_tokens = await self._pool(tokens)
        return [float(v[0]) for v in pooled], n_tokens

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

    async def _pool(self, tokens: Callable[[], list[list[int]]]) -> tuple[list[np.ndarray], int]:
        """The pooled outputs of the sequences ``tokens()`` makes (tokenizing and checking), and their tokens.

        Without an engine thread, all of it is one call; on a chat model's, tokenizing is off the event loop
        and each batch its own call, so the model's generation steps run between them."""
        if self._own:
            return await self._run(lambda: self._decode_all(tokens()))  # type: ignore[no-any-return]
        sequences = await asyncio.to_thread(tokens)
        lengths = [len(s) for s in sequences]
        out: list[np.ndarray] = []
        while len(out) < len(sequences):
            out += await self._run(functools.partial(self._decode_from, sequences, lengths, len(out)))
        return out, sum(lengths)

    async def _on_own_thread(self, fn: Callable[[], T]) -> T:
        assert self._thread is not None
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    def _decode_all(self, sequences: list[list[int]]) -> tuple[list[np.ndarray], int]:
        lengths = [len(s) for s in sequences]
        out: list[np.ndarray] = []
        while len(out) < len(sequences):
            out += self._decode_from(sequences, lengths, len(out))
        return out, sum(lengths)

    def _decode_from(self, sequences: list[list[int]], lengths: list[int], start: int) -> list[np.ndarray]:
        """The next batch from input ``start``, sized on the model's thread by what runs there now."""
        end = take(lengths, start, self._small if self._busy() else self._options.batch, MAX_SEQUENCES)
        return self._decode(sequences[start:end])

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
        if self._thread is not None:
            self._thread.shutdown()
        if self._embedder is not None:
            self._embedder.close()
