"""A request's sampler chain, with the grammar checking the chain's pick instead of masking every token.

Runs on the engine thread.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any

import llama_cpp as L
import numpy as np

from edge_run.errors import InvalidRequest

if TYPE_CHECKING:
    from edge_run.engine.llama.context import Context
    from edge_run.engine.llama.model import Model
    from edge_run.engine.types import SamplerSpec

__all__ = ["Sampler"]


_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # llama_token_data


class Sampler:
    """A llama.cpp sampler chain for one request.

    A grammar is not a link of the chain: the chain picks a token from the raw logits, and the grammar
    checks only that token; the whole vocabulary is masked by the grammar only when it rejects the pick,
    and the chain picks again. llama.cpp's own server samples this way.
    A greedy pick is the same either way: the best token, if allowed, is the best allowed one.
    """

    def __init__(self, model: Model, spec: SamplerSpec) -> None:
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        self._ptr = chain
        self._grammar: Any = None
        self._cand: np.ndarray | None = None  # the candidates of a pick in numpy, made on first use
        self._ids: np.ndarray | None = None
        self.spec = spec
        add = L.llama_sampler_chain_add
        if spec.logit_bias:
            arr = (L.llama_logit_bias * len(spec.logit_bias))()
            for i, (tok, bias) in enumerate(spec.logit_bias):
                arr[i].token = tok  # type: ignore[assignment]  # ctypes converts
                arr[i].bias = bias
            add(chain, L.llama_sampler_init_logit_bias(model.n_vocab, len(spec.logit_bias), arr))
        if spec.grammar is not None:
            grammar = _grammar(model, spec.grammar, spec.triggers)
            if not grammar:
                self.close()
                raise InvalidRequest("the output constraint could not be compiled to a grammar")
            self._grammar = grammar
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
        return self.sample_row(ctx.logits(idx))

    def sample_row(self, logits: np.ndarray) -> int:
        """Sample from a row of logits as :meth:`sample` does (``llama_sampler_sample``'s steps, in numpy)."""
        token = self._pick(logits, self._ptr)
        if self._grammar is not None:
            one = np.array([(token, 0.0, 0.0)], dtype=_TOKEN_DATA)
            _apply(self._grammar, one)
            if np.isneginf(one["logit"][0]):  # rejected: mask the vocabulary, then pick again
                token = self._pick(logits, self._grammar, self._ptr)
            L.llama_sampler_accept(self._grammar, token)
        L.llama_sampler_accept(self._ptr, token)
        return token

    def _pick(self, logits: np.ndarray, *samplers: Any) -> int:
        if self._cand is None:
            self._cand = np.zeros(len(logits), dtype=_TOKEN_DATA)
            self._ids = np.arange(len(logits), dtype=np.int32)
        cand = self._cand
        cand["id"] = self._ids  # a pick sorts the candidates in place: the ids are set again each time
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


def _grammar(model: Model, gbnf: str, triggers: tuple[str, ...]) -> Any:
    """llama.cpp's grammar sampler; with ``triggers`` (regular expressions) a lazy one, free until one matches."""
    if not triggers:
        return L.llama_sampler_init_grammar(model.vocab, gbnf.encode(), b"root")
    patterns = (ctypes.c_char_p * len(triggers))(*(t.encode() for t in triggers))
    no_tokens = (L.llama_token * 1)()
    return L.llama_sampler_init_grammar_lazy_patterns(
        model.vocab, gbnf.encode(), b"root", patterns, len(triggers), no_tokens, 0
    )
