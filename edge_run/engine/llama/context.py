"""The engine's llama context, with one sequence per slot, and the batch it decodes.

Everything here runs on the engine thread.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import llama_cpp as L
import numpy as np

from edge_run.engine.llama.backend import reference_switch
from edge_run.errors import EngineFailure

if TYPE_CHECKING:
    from collections.abc import Callable

    from edge_run.engine.llama.model import Model

__all__ = ["Batch", "Context", "EmbdBatch"]

# llama.cpp asks its abort callback after each graph node, on a compute thread. libc's strlen over a 2-byte flag
# answers without Python (and without waiting for the GIL): 0 while the flag is clear, 1 once :class:`_Alarm` sets it.
_LIBC = ctypes.cdll.msvcrt if os.name == "nt" else ctypes.CDLL(None)
_FLAG_SET = L.ggml_abort_callback(ctypes.cast(_LIBC.strlen, ctypes.c_void_p).value or 0)


class _Alarm:
    """Sets a flag once a call has run past its deadline: a thread of its own, which sleeps until the deadline it
    knows (a call that ends first disarms it, and an arm wakes it only for an earlier deadline than that one)."""

    def __init__(self) -> None:
        self.flag = (ctypes.c_ubyte * 2)()
        self._cond = threading.Condition()
        self._at: float | None = None  # the deadline of the call under way (monotonic seconds)
        self._wakes: float | None = None  # when the thread wakes next (None: when told)
        self._closed = False
        self._thread: threading.Thread | None = None

    def arm(self, at: float) -> None:
        with self._cond:
            self._at = at
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="edge-run-deadline", daemon=True)
                self._thread.start()
            elif self._wakes is None or at < self._wakes:
                self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._at = None
            self.flag[0] = 0

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                if self._at is not None and self._at <= time.monotonic():
                    self.flag[0] = 1
                    self._at = None
                self._wakes = self._at
                self._cond.wait(None if self._at is None else self._at - time.monotonic())


class _Rows:
    """A reusable ``llama_batch`` of ``capacity`` rows: tokens, or ``n_embd``-wide embeddings."""

    def __init__(self, capacity: int, n_embd: int = 0) -> None:
        self.capacity = capacity
        self._b = L.llama_batch_init(capacity, n_embd, 1)
        self.n = 0

    def clear(self) -> None:
        self.n = 0

    def _place(self, i: int, pos: int, seq: int, logits: bool) -> None:
        b = self._b
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits

    def position(self, i: int) -> int:
        """The position of the batch's ``i``-th row."""
        return int(self._b.pos[i])

    def close(self) -> None:
        if self._b is not None:
            L.llama_batch_free(self._b)
            self._b = None


class Batch(_Rows):
    """A reusable ``llama_batch`` of tokens that the scheduler fills each step."""

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        """Append one token; returns its index in the batch (for :meth:`Sampler.sample`)."""
        i = self.n
        self._b.token[i] = token
        self._place(i, pos, seq, logits)
        self.n = i + 1
        return i

    def fill(self, tokens: list[int], pos: int, seq: int, *, last_logits: bool) -> None:
        """Clear, then ``tokens`` at positions ``pos`` on of ``seq``; the last one's logits if asked."""
        self.clear()
        for i, token in enumerate(tokens):
            self.add(token, pos + i, seq, last_logits and i == len(tokens) - 1)


class EmbdBatch(_Rows):
    """A reusable ``llama_batch`` of embeddings: an image's or audio's rows, decoded as a prompt's tokens are.

    A model with M-RoPE reads 4 positions a row (section-major: ``pos[j * n + i]``), from a buffer of its own."""

    def __init__(self, capacity: int, n_embd: int, *, mrope: bool = False) -> None:
        super().__init__(capacity, n_embd)
        self.n_embd = n_embd
        self._embd = np.ctypeslib.as_array(self._b.embd, shape=(capacity, n_embd))
        self._own_pos: int | None = None  # the address llama_batch_init allocated (a field's ctypes object follows it)
        if mrope:
            self._pos4 = np.zeros(4 * capacity, np.int32)
            self._own_pos = ctypes.cast(self._b.pos, ctypes.c_void_p).value
            self._b.pos = self._pos4.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))

    def fill(
        self, rows: np.ndarray, pos: int, seq: int, *, last_logits: bool, sections: np.ndarray | None = None
    ) -> None:
        """``rows`` (n x n_embd) at positions ``pos`` to ``pos + n`` of ``seq`` (or, with M-RoPE, ``sections``: 4 x n
        positions); the last one's logits if asked."""
        n = len(rows)
        self._embd[:n] = rows
        for i in range(n):
            self._place(i, pos + i, seq, last_logits and i == n - 1)
        if self._own_pos is not None:
            assert sections is not None, "a model with M-RoPE takes 4 positions a media row"
            self._pos4[: 4 * n] = sections.reshape(-1)
        self.n = n

    def close(self) -> None:
        if self._b is not None and self._own_pos is not None:
            self._b.pos = ctypes.cast(self._own_pos, ctypes.POINTER(ctypes.c_int32))  # llama_batch_free frees it
        super().close()


class Context:
    """One llama context with ``n_seq`` sequences (slots), each of ``n_ctx_seq`` tokens."""

    def __init__(self, model: Model, *, n_seq: int, n_ctx_seq: int, n_batch: int, threads: int) -> None:
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx_seq * n_seq
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        params.n_threads = threads
        params.n_threads_batch = threads
        params.kv_unified = False  # each slot its own KV stream: attention never scans other slots
        params.no_perf = True
        self._ptr = L.llama_init_from_model(model.ptr, params)
        if not self._ptr:
            raise EngineFailure("could not create a llama.cpp context (out of memory?)")
        self._mem = L.llama_get_memory(self._ptr)
        self.n_ctx_seq = n_ctx_seq
        self.n_vocab = model.n_vocab
        # sliding-window layers reuse cells out of order, and M-RoPE puts an image's rows on fewer positions: either
        # way a row's position does not say how many cells its sequence holds
        mrope = L.llama_model_rope_type(model.ptr) in (L.LLAMA_ROPE_TYPE_MROPE, L.LLAMA_ROPE_TYPE_IMROPE)
        self._swa = L.llama_model_n_swa(model.ptr) > 0 or mrope
        self._alarm = _Alarm()
        self._watch_flag()
        self._reference = reference_switch(self._ptr)

    @property
    def reference(self) -> bool:
        """Whether :meth:`decode` can take ggml-cpu's reference kernels, with which a row computes alike in any call
        on any thread count (generated rows: alone, with drafts or beside others)."""
        return self._reference is not None

    def _watch_flag(self) -> None:
        L.llama_set_abort_callback(self._ptr, _FLAG_SET, ctypes.cast(self._alarm.flag, ctypes.c_void_p))

    def splits_lone_row(self, pos: int) -> bool:
        """Whether a sequence's lone row at ``pos`` may have its KV split between threads, which makes its logits
        depend on the thread count. ggml-cpu's flash attention splits a single row's KV from 512 cells; a stream
        pads its KV to 256 cells and, holding one sequence, keeps position p in cell p. So a row at position 255
        or before (or a stream of 256 cells) computes the same on any thread count. With sliding-window layers
        cells are reused out of order: every lone row counts as split."""
        return self._swa or (pos >= 256 and self.n_ctx_seq > 256)

    @property
    def ptr(self) -> L.llama_context_p:
        return self._ptr

    def decode(
        self,
        batch: Batch | EmbdBatch,
        *,
        causal: bool = True,
        abort: Callable[[], bool] | None = None,
        deadline: float | None = None,
        reference: bool = False,
    ) -> bool:
        """One ``llama_decode``; ``causal=False`` lets the batch's rows attend to each other (a Gemma 3 image), and
        ``reference`` takes ggml-cpu's reference kernels where :attr:`reference` says it can. ``abort``, asked after
        each graph node (on the CPU ~500 times a call), stops the call when true, and so does running past
        ``deadline`` seconds: then llama.cpp drops the rows it had written, and this returns False."""
        batch._b.n_tokens = batch.n
        switch = self._reference if reference else None
        if switch is not None:
            switch(True)
        if not causal:
            L.llama_set_causal_attn(self._ptr, False)
        flag = self._alarm.flag
        stop = L.ggml_abort_callback(lambda _: flag[0] or abort()) if abort is not None else None
        if stop is not None:
            L.llama_set_abort_callback(self._ptr, stop, None)
        if deadline is not None:
            self._alarm.arm(time.monotonic() + deadline)
        try:
            rc = L.llama_decode(self._ptr, batch._b)
        finally:
            if deadline is not None:
                self._alarm.disarm()
            if not causal:
                L.llama_set_causal_attn(self._ptr, True)
            if switch is not None:
                switch(False)
            if stop is not None:
                self._watch_flag()
        if rc == 2 and (stop is not None or deadline is not None):
            return False
        if rc != 0:
            raise EngineFailure(f"llama_decode returned {rc}")
        return True

    def set_threads(self, threads: int) -> None:
        """Threads for the next decodes (``ThreadGovernor`` changes it between steps)."""
        L.llama_set_n_threads(self._ptr, threads, threads)

    def seq_rm(self, seq: int, p0: int, p1: int = -1) -> None:
        L.llama_memory_seq_rm(self._mem, seq, p0, p1)

    def set_sampler(self, seq: int, chain: Any) -> None:
        """Sample ``seq``'s rows inside the decode graph with ``chain`` (a :class:`Sampler`'s ``ptr``), on the
        device that computes the logits; ``None`` stops that.

        Then only the sampled token comes back to the host, not a row of vocabulary-sized logits, and the
        host skips its pass over the vocabulary. llama.cpp initialises a chain for this once: a sampler
        that moves to another sequence is replaced by a copy (:meth:`Sampler.fresh_copy`).
        """
        if not L.llama_set_sampler(self._ptr, seq, chain):
            raise EngineFailure("llama.cpp refused to sample this sequence on the device")

    def seq_cp(self, src: int, dst: int) -> None:
        """Copy a whole sequence's KV: the only copy llama.cpp allows between per-slot KV streams."""
        L.llama_memory_seq_cp(self._mem, src, dst, -1, -1)

    def logits(self, idx: int) -> np.ndarray:
        """The logits of batch index ``idx``: a view, valid until the next decode."""
        return np.ctypeslib.as_array(L.llama_get_logits_ith(self._ptr, idx), shape=(self.n_vocab,))

    def close(self) -> None:
        if self._ptr:
            self._alarm.close()
            L.llama_free(self._ptr)
            self._ptr = None
