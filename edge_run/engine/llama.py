"""The llama.cpp adapter: the only module that imports ``llama_cpp``.

Thin wrappers over the low-level C API (model, context, batch, sampler chain). Everything here
runs on the engine thread, except :meth:`Model.tokenize` and :meth:`Model.piece`, which only read
the immutable vocabulary.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp as L
import numpy as np
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from edge_run.errors import EngineFailure, InvalidRequest

__all__ = [
    "Batch",
    "Context",
    "Embedder",
    "GpuDevice",
    "Model",
    "Sampler",
    "SamplerSpec",
    "add_rpc_servers",
    "gpu_devices",
    "gpu_offload_supported",
    "json_grammar",
    "system_info",
]

log = logging.getLogger(__name__)


def _init_backend() -> None:
    """llama.cpp's process-wide init; repeating it is harmless.

    K-quant weights take a tiled kernel from 8 rows and the row-by-row one below: without the tiled
    kernel, a token gets the same arithmetic alone, in a prompt chunk or beside other requests (and
    decoding keeps its speed; only prompts run slower). ggml reads the variable once, at the first
    matrix product.
    """
    os.environ.setdefault("GGML_CPU_TILED_MM", "0")
    if not os.environ.get("EDGE_RUN_LLAMA_LOG"):
        L.llama_log_set(_quiet_log, ctypes.c_void_p(0))
    L.llama_backend_init()


@L.llama_log_callback
def _quiet_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    if level == 4:  # GGML_LOG_LEVEL_ERROR
        log.error("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())


def json_grammar(schema: dict[str, Any] | None) -> str:
    """GBNF for any JSON object (``schema=None``) or for values of a JSON schema.

    Whitespace is reduced to at most one space between tokens: small models otherwise drift into
    endless newlines inside a grammar that allows them.
    """
    if schema is None:
        return JSON_GBNF.replace('ws ::= | " " | "\\n" [ \\t]{0,20}', 'ws ::= " "?')
    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare Exceptions for unsupported features
        raise InvalidRequest(f"unsupported JSON schema: {exc}", param="response_format") from exc
    return "\n".join('space ::= " "?' if line.startswith("space ::=") else line for line in gbnf.splitlines())


def gpu_offload_supported() -> bool:
    return bool(L.llama_supports_gpu_offload())


@dataclass(frozen=True, slots=True)
class GpuDevice:
    """A GPU that llama.cpp can offload to, with its memory in bytes as the driver reports it now."""

    name: str  # ggml's name: CUDA0, Metal, Vulkan0...
    description: str  # the card: "NVIDIA H100 80GB HBM3", "Apple M2"...
    free: int
    total: int

    @property
    def label(self) -> str:
        return f"{self.name} {self.description}".strip()


_GPU_TYPES = (1, 2)  # GGML_BACKEND_DEVICE_TYPE_GPU, _IGPU (unified memory: Apple silicon)


def _ggml() -> ctypes.CDLL:
    """ggml's device API, reached through libllama (llama-cpp-python binds none of it)."""
    from llama_cpp.llama_cpp import _lib

    lib: ctypes.CDLL = _lib
    if lib.ggml_backend_dev_memory.restype is not None:  # declared once: restype defaults to int
        lib.ggml_backend_dev_count.restype = ctypes.c_size_t
        lib.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        lib.ggml_backend_dev_get.restype = ctypes.c_void_p
        lib.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_type.restype = ctypes.c_int
        for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_char_p
        lib.ggml_backend_dev_memory.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_size_t),
            ctypes.POINTER(ctypes.c_size_t),
        ]
        lib.ggml_backend_dev_memory.restype = None
    return lib


def gpu_devices() -> list[GpuDevice]:
    """The GPUs this llama.cpp build can use (none on a CPU build), with their free memory now."""
    _init_backend()
    if not gpu_offload_supported():
        return []
    lib = _ggml()
    found = []
    for i in range(lib.ggml_backend_dev_count()):
        dev = lib.ggml_backend_dev_get(i)
        if lib.ggml_backend_dev_type(dev) not in _GPU_TYPES:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
        name = lib.ggml_backend_dev_name(dev) or b"GPU"
        description = lib.ggml_backend_dev_description(dev) or b""
        found.append(GpuDevice(name.decode(), description.decode(errors="replace"), free.value, total.value))
    return found


def add_rpc_servers(servers: tuple[str, ...]) -> None:
    """Make llama.cpp ``rpc-server`` workers (``host:port``) devices that layers can be offloaded to.

    As llama.cpp's own ``--rpc`` does: the RPC backend's ``ggml_backend_rpc_add_server`` registers each
    worker's devices, which then count as GPUs for ``--gpu-layers``. Needs a build with ``GGML_RPC=on``.
    """
    _init_backend()
    if not servers:
        return
    if not L.llama_supports_rpc():
        raise EngineFailure(
            "rpc_servers needs llama-cpp-python built with RPC: "
            'CMAKE_ARGS="-DGGML_RPC=on" pip install --force-reinstall --no-deps llama-cpp-python==0.3.36'
        )
    lib = _ggml()
    lib.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    lib.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    lib.ggml_backend_register.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_register.restype = None
    rpc = lib.ggml_backend_reg_by_name(b"RPC")
    address = lib.ggml_backend_reg_get_proc_address(rpc, b"ggml_backend_rpc_add_server") if rpc else None
    if not address:
        raise EngineFailure("this llama.cpp build has no RPC backend (ggml_backend_rpc_add_server)")
    add_server = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(address)
    for server in servers:
        if server in _RPC_ADDED:
            continue
        _reachable(server)  # ggml aborts the whole process when it cannot connect
        registered = add_server(server.encode())
        if not registered:
            raise EngineFailure(f"could not reach the rpc-server at {server}")
        lib.ggml_backend_register(registered)
        _RPC_ADDED.add(server)


def _reachable(server: str) -> None:
    host, _, port = server.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise EngineFailure(f"could not reach the rpc-server at {server}: {exc}") from None


# llama.cpp's device registry is process-wide, so this mirrors it: a reloaded model must not add a worker twice
_RPC_ADDED: set[str] = set()


def system_info() -> str:
    return L.llama_print_system_info().decode("utf-8", "replace").strip()


class Model:
    """A loaded GGUF: weights and vocabulary."""

    def __init__(self, path: Path, *, gpu_layers: int) -> None:
        _init_backend()
        params = L.llama_model_default_params()
        params.n_gpu_layers = gpu_layers
        # repacked weights (Q4_0, Q4_K, IQ4_NL... on AVX2) take a 4-column kernel and a 1-column one,
        # so a token's logits would depend on the rows decoded beside it
        params.use_extra_bufts = False
        self.path = path
        self._ptr = L.llama_model_load_from_file(str(path).encode(), params)
        if not self._ptr:
            raise EngineFailure(f"could not load model file {path.name}")
        self.vocab = L.llama_model_get_vocab(self._ptr)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = L.llama_model_n_ctx_train(self._ptr)
        self.n_layer = L.llama_model_n_layer(self._ptr)
        self.gpu_layers = min(gpu_layers, self.n_layer + 1) if gpu_offload_supported() else 0
        self.add_bos = bool(L.llama_vocab_get_add_bos(self.vocab))
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self.bos_text = self._special_text(L.llama_vocab_bos(self.vocab))
        self.eos_text = self._special_text(L.llama_vocab_eos(self.vocab))

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.piece(token, special=True).decode("utf-8", "replace")

    @property
    def ptr(self) -> L.llama_model_p:
        return self._ptr

    def meta(self, key: str) -> str | None:
        size = 1 << 16
        while True:
            buf = ctypes.create_string_buffer(size)
            n = L.llama_model_meta_val_str(self._ptr, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", "replace")
            size = n + 1

    def chat_template(self) -> str | None:
        return self.meta("tokenizer.chat_template")

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (L.llama_token * cap)()
            n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            raise EngineFailure("tokenization failed")
        return list(buf[:n])

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes of one token; special tokens render as nothing unless asked for."""
        key = token if not special else -token - 1
        cached = self._pieces.get(key)
        if cached is not None:
            return cached
        buf = ctypes.create_string_buffer(64)
        n = L.llama_token_to_piece(self.vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, token, buf, -n, 0, special)
        out = buf.raw[:n]
        self._pieces[key] = out
        return out

    def is_eog(self, token: int) -> bool:
        eog = self._eog.get(token)
        if eog is None:
            eog = self._eog[token] = bool(L.llama_vocab_is_eog(self.vocab, token))
        return eog

    def close(self) -> None:
        if self._ptr:
            L.llama_model_free(self._ptr)
            self._ptr = None


class Batch:
    """A reusable ``llama_batch`` that the scheduler fills each step."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._b = L.llama_batch_init(capacity, 0, 1)
        self.n = 0

    def clear(self) -> None:
        self.n = 0

    def add(self, token: int, pos: int, seq: int, logits: bool) -> int:
        """Append one token; returns its index in the batch (for :meth:`Sampler.sample`)."""
        i = self.n
        b = self._b
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq
        b.logits[i] = logits
        self.n = i + 1
        return i

    @property
    def free(self) -> int:
        return self.capacity - self.n

    def close(self) -> None:
        if self._b is not None:
            L.llama_batch_free(self._b)
            self._b = None


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

    @property
    def ptr(self) -> L.llama_context_p:
        return self._ptr

    def decode(self, batch: Batch) -> None:
        batch._b.n_tokens = batch.n
        rc = L.llama_decode(self._ptr, batch._b)
        if rc != 0:
            raise EngineFailure(f"llama_decode returned {rc}")

    def set_threads(self, threads: int) -> None:
        """Threads for the next decodes (``ThreadGovernor`` changes it between steps)."""
        L.llama_set_n_threads(self._ptr, threads, threads)

    def seq_rm(self, seq: int, p0: int, p1: int = -1) -> None:
        L.llama_memory_seq_rm(self._mem, seq, p0, p1)

    def set_sampler(self, seq: int, sampler: Sampler | None) -> None:
        """Sample ``seq``'s rows inside the decode graph, on the device that computes the logits (or stop).

        Then only the sampled token comes back to the host, not a row of vocabulary-sized logits, and the
        host skips its pass over the vocabulary. llama.cpp initialises a chain for this once: a sampler
        that moves to another sequence is replaced by a copy (:meth:`Sampler.fresh_copy`).
        """
        if not L.llama_set_sampler(self._ptr, seq, sampler.ptr if sampler is not None else None):
            raise EngineFailure("llama.cpp refused to sample this sequence on the device")

    def seq_cp(self, src: int, dst: int) -> None:
        """Copy a whole sequence's KV: the only copy llama.cpp allows between per-slot KV streams."""
        L.llama_memory_seq_cp(self._mem, src, dst, -1, -1)

    def logprobs(self, idx: int, token: int, top_n: int) -> tuple[float, list[tuple[int, float]]]:
        """Log-probability of ``token`` and the ``top_n`` likeliest tokens, from batch index ``idx``."""
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(self._ptr, idx), shape=(self.n_vocab,))
        peak = float(logits.max())
        lse = peak + float(np.log(np.exp(logits - peak).sum()))
        top: list[tuple[int, float]] = []
        if top_n > 0:
            ids = np.argpartition(-logits, top_n)[:top_n]
            ids = ids[np.argsort(-logits[ids])]
            top = [(int(i), float(logits[i]) - lse) for i in ids]
        return float(logits[token]) - lse, top

    def close(self) -> None:
        if self._ptr:
            L.llama_free(self._ptr)
            self._ptr = None


class Embedder:
    """A second context on the same weights, mean-pooling one input at a time into a unit vector."""

    def __init__(self, model: Model, *, n_ctx: int, threads: int) -> None:
        if L.llama_model_has_encoder(model.ptr):
            raise InvalidRequest("this model cannot produce embeddings here (encoder models are not supported)")
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_ctx
        params.n_ubatch = n_ctx  # mean pooling needs a whole input in one micro-batch
        params.n_seq_max = 1
        params.n_threads = threads
        params.n_threads_batch = threads
        params.embeddings = True
        params.pooling_type = L.LLAMA_POOLING_TYPE_MEAN
        params.no_perf = True
        self._ptr = L.llama_init_from_model(model.ptr, params)
        if not self._ptr:
            raise EngineFailure("could not create an embedding context")
        self._mem = L.llama_get_memory(self._ptr)
        self._batch = Batch(n_ctx)
        self.n_ctx = n_ctx
        self.n_embd = L.llama_model_n_embd(model.ptr)

    def embed(self, tokens: list[int]) -> list[float]:
        batch = self._batch
        batch.clear()
        for i, token in enumerate(tokens):
            batch.add(token, i, 0, True)
        L.llama_memory_clear(self._mem, True)
        batch._b.n_tokens = batch.n
        if L.llama_decode(self._ptr, batch._b) != 0:
            raise EngineFailure("embedding decode failed")
        ptr = L.llama_get_embeddings_seq(self._ptr, 0)
        if not ptr:
            raise EngineFailure("the model returned no pooled embedding")
        vec = np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).astype(np.float64)
        norm = float(np.linalg.norm(vec)) or 1.0
        return (vec / norm).tolist()

    def close(self) -> None:
        self._batch.close()
        if self._ptr:
            L.llama_free(self._ptr)
            self._ptr = None


@dataclass(frozen=True, slots=True)
class SamplerSpec:
    """Sampling settings of one request, in llama.cpp's terms."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()
    grammar: str | None = None  # GBNF; the output must match it

    @property
    def offloadable(self) -> bool:
        """Whether llama.cpp can run this chain in the decode graph (every sampler used here but the grammar)."""
        return self.grammar is None


_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # llama_token_data


class Sampler:
    """A llama.cpp sampler chain for one request.

    A grammar is not a link of the chain (unless ``grammar_first``): the chain picks a token from the
    raw logits, and the grammar checks only that token; the whole vocabulary is masked by the grammar
    only when it rejects the pick, and the chain picks again. llama.cpp's own server samples this way.
    A greedy pick is the same either way: the best token, if allowed, is the best allowed one.
    """

    def __init__(self, model: Model, spec: SamplerSpec, *, grammar_first: bool = False) -> None:
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        self._ptr = chain
        self._grammar: Any = None
        self.spec = spec
        add = L.llama_sampler_chain_add
        if spec.logit_bias:
            arr = (L.llama_logit_bias * len(spec.logit_bias))()
            for i, (tok, bias) in enumerate(spec.logit_bias):
                arr[i].token = tok  # type: ignore[assignment]  # ctypes converts
                arr[i].bias = bias
            add(chain, L.llama_sampler_init_logit_bias(model.n_vocab, len(spec.logit_bias), arr))
        if spec.grammar is not None:
            grammar = L.llama_sampler_init_grammar(model.vocab, spec.grammar.encode(), b"root")
            if not grammar:
                self.close()
                raise InvalidRequest("the output constraint could not be compiled to a grammar")
            if grammar_first:
                add(chain, grammar)
            else:
                self._grammar = grammar
                self._cand = np.zeros(model.n_vocab, dtype=_TOKEN_DATA)
                self._ids = np.arange(model.n_vocab, dtype=np.int32)
        if spec.repeat_penalty != 1.0 or spec.frequency_penalty or spec.presence_penalty:
            add(
                chain,
                L.llama_sampler_init_penalties(
                    model.n_vocab,
                    spec.penalty_last_n,
                    spec.repeat_penalty,
                    spec.frequency_penalty,
                    spec.presence_penalty,
                ),
            )
        if spec.temperature <= 0.0:
            add(chain, L.llama_sampler_init_greedy())
            return
        if spec.top_k > 0:
            add(chain, L.llama_sampler_init_top_k(spec.top_k))
        if spec.top_p < 1.0:
            add(chain, L.llama_sampler_init_top_p(spec.top_p, 1))
        if spec.min_p > 0.0:
            add(chain, L.llama_sampler_init_min_p(spec.min_p, 1))
        add(chain, L.llama_sampler_init_temp(spec.temperature))
        seed = L.LLAMA_DEFAULT_SEED if spec.seed is None else spec.seed & 0xFFFFFFFF
        add(chain, L.llama_sampler_init_dist(seed))

    @property
    def ptr(self) -> Any:
        return self._ptr

    def fresh_copy(self) -> None:
        """Swap the chain for a copy with the same state, never attached to a context."""
        old, self._ptr = self._ptr, L.llama_sampler_clone(self._ptr)
        L.llama_sampler_free(old)

    def sample(self, ctx: Context, idx: int) -> int:
        """Sample from the logits of batch index ``idx`` (and record the token for penalties)."""
        if self._grammar is None:
            return int(L.llama_sampler_sample(self._ptr, ctx.ptr, idx))
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx.ptr, idx), shape=(ctx.n_vocab,))
        token = self._pick(logits, self._ptr)
        one = np.array([(token, 0.0, 0.0)], dtype=_TOKEN_DATA)
        _apply(self._grammar, one)
        if np.isneginf(one["logit"][0]):  # rejected: mask the vocabulary, then pick again
            token = self._pick(logits, self._grammar, self._ptr)
        L.llama_sampler_accept(self._grammar, token)
        L.llama_sampler_accept(self._ptr, token)
        return token

    def _pick(self, logits: np.ndarray, *samplers: Any) -> int:
        cand = self._cand
        cand["id"] = self._ids
        cand["logit"] = logits
        cand["p"] = 0.0
        arr = _apply(samplers[0], cand)
        for smpl in samplers[1:]:
            L.llama_sampler_apply(smpl, ctypes.byref(arr))
        return int(arr.data[arr.selected].id)

    def close(self) -> None:
        if self._ptr:
            L.llama_sampler_free(self._ptr)
            self._ptr = None
        if self._grammar:
            L.llama_sampler_free(self._grammar)
            self._grammar = None


def _apply(smpl: Any, cand: np.ndarray) -> Any:
    """Run one sampler over ``cand`` (an array of llama_token_data) in place; returns the C view of it."""
    arr = L.llama_token_data_array(
        data=cand.ctypes.data_as(L.llama_token_data_p), size=len(cand), selected=-1, sorted=False
    )
    L.llama_sampler_apply(smpl, ctypes.byref(arr))
    return arr
