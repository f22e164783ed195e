"""A loaded GGUF: weights and vocabulary.

:meth:`Model.tokenize` and :meth:`Model.piece` only read the immutable vocabulary, so any thread may
call them; the rest runs on the engine thread.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import llama_cpp as L

from edge_run.engine.llama.backend import amx_built, gpu_offload_supported, init_backend
from edge_run.errors import EngineFailure
from edge_run.gguf import read_layout

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Model"]

# ggml-cpu (x86) computes a matrix product of these weight types with its tiled kernel from 8 rows of a call,
# and row by row below (``tiled/tiled.cpp``: ``ggml_tiled_supported``, ``ggml_tiled_min_batch``): other
# arithmetic, so a generated row computes alike alone and beside others only in calls of 7 rows at most.
# Q2_K to Q6_K, IQ2_XXS, IQ2_XS, IQ3_XXS, IQ1_S, IQ3_S, IQ2_S, IQ4_XS, IQ1_M.
TILED_TYPES = frozenset({10, 11, 12, 13, 14, 16, 17, 18, 19, 21, 22, 23, 29})
TILED_FROM = 8

# Markers of thinking and tool-call formats. Some vocabularies hold them as control tokens, which render
# as nothing; the serving layer parses them out of the text, so these are shown (llama.cpp's "preserved tokens").
SHOWN_MARKERS = (
    "<think>", "</think>", "[THINK]", "[/THINK]", "<|channel>", "<channel|>", "<seed:think>", "</seed:think>",
    "<|channel|>", "<|message|>", "<|start|>", "<|end|>", "<|constrain|>",
    "<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]", "<|python_tag|>", "<|tool_call|>",
    "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>",  # noqa: RUF001 (DeepSeek writes fullwidth bars)
    "<start_function_call>", "<end_function_call>", "<|tool_call>", "<tool_call|>",
)  # fmt: skip


class Model:
    """A loaded GGUF: weights and vocabulary."""

    def __init__(self, path: Path, *, gpu_layers: int, repack: bool = False) -> None:
        init_backend()
        params = L.llama_model_default_params()
        params.n_gpu_layers = gpu_layers
        # repacked weights (Q4_0, Q4_K, IQ4_NL... on AVX2) take a 4-column kernel and a 1-column one,
        # so a token's logits would depend on the rows decoded beside it: only models that never generate
        # (embedders, rerankers, whose vectors move by rounding with their batch anyway) take the faster kernels,
        # except where the extra buffer types would put them in AMX's, which crash (see amx_built)
        params.use_extra_bufts = repack and not amx_built()
        self.path = path
        self._ptr = L.llama_model_load_from_file(str(path).encode(), params)
        if not self._ptr:
            raise EngineFailure(f"could not load model file {path.name}")
        self.vocab = L.llama_model_get_vocab(self._ptr)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.n_layer = L.llama_model_n_layer(self._ptr)
        self.gpu_layers = min(gpu_layers, self.n_layer + 1) if gpu_offload_supported() else 0
        self.add_bos = bool(L.llama_vocab_get_add_bos(self.vocab))
        self.n_ctx_train = L.llama_model_n_ctx_train(self._ptr)
        # the most rows a call of generated rows may hold on the CPU (None: any number; see TILED_TYPES)
        self.row_limit = TILED_FROM - 1 if read_layout(path).tensor_types & TILED_TYPES else None
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self.bos_text = self._special_text(L.llama_vocab_bos(self.vocab))
        self.eos_text = self._special_text(L.llama_vocab_eos(self.vocab))
        markers = (self.tokenize(m, add_special=False) for m in SHOWN_MARKERS)
        self._shown = frozenset(ids[0] for ids in markers if len(ids) == 1 and not self.is_eog(ids[0]))

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

    def pair_tokens(self, query: str, documents: list[str]) -> list[list[int]]:
        """A reranker's input for each (query, document) pair, as llama-server makes it: the GGUF's ``rerank``
        template when it has one (Qwen3-Reranker), else ``[BOS] query [EOS] [SEP] document [EOS]`` as the
        vocabulary adds each."""
        template = self.meta("tokenizer.chat_template.rerank")
        if template is not None:
            texts = (template.replace("{query}", query).replace("{document}", d) for d in documents)
            return [self.tokenize(text, add_special=False) for text in texts]
        v = self.vocab
        eos = L.llama_vocab_eos(v) if L.llama_vocab_eos(v) != -1 else L.llama_vocab_sep(v)
        bos = [L.llama_vocab_bos(v)] if L.llama_vocab_get_add_bos(v) else []
        end = [eos] if L.llama_vocab_get_add_eos(v) else []
        sep = [L.llama_vocab_sep(v)] if L.llama_vocab_get_add_sep(v) else []
        head = bos + self.tokenize(query, add_special=False, parse_special=False) + end + sep
        return [head + self.tokenize(d, add_special=False, parse_special=False) + end for d in documents]

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
        """The bytes of one token; special tokens render as nothing unless asked for (or a shown marker)."""
        special = special or token in self._shown
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
