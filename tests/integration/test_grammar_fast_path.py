"""The grammar checks the chain's pick instead of masking the whole vocabulary every token
(``Sampler``'s fast path). Greedy output must be the same token for token as with the grammar as a link
of the chain (``MaskedSampler`` here), on the real model, for JSON mode, a JSON schema and a generic tool
call's schema."""

from __future__ import annotations

from pathlib import Path

import llama_cpp as L
import pytest

from edge_run.engine import SamplerSpec, json_grammar
from edge_run.engine.llama.context import Batch, Context
from edge_run.engine.llama.model import Model
from edge_run.engine.llama.sampler import Sampler
from tests.support import share_of_cores

pytestmark = pytest.mark.integration

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "hobbies": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age", "hobbies"],
}
TOOL_CALL = {
    "type": "object",
    "properties": {
        "name": {"enum": ["get_weather", "get_time"]},
        "arguments": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
    "required": ["name", "arguments"],
}
CASES = [
    ("json_object", None, "Describe a cat as JSON."),
    ("json_schema", PERSON, "Describe a person as JSON with name, age and hobbies."),
    ("tool call", TOOL_CALL, "What is the weather in Paris? Answer with a tool call."),
]


class MaskedSampler:
    """The reference: the grammar as the chain's first link, masking the whole vocabulary every token."""

    def __init__(self, model: Model, spec: SamplerSpec) -> None:
        assert spec.grammar is not None and spec.temperature <= 0 and not spec.logit_bias  # what the cases use
        self._ptr = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        grammar = L.llama_sampler_init_grammar(model.vocab, spec.grammar.encode(), b"root")
        assert grammar
        L.llama_sampler_chain_add(self._ptr, grammar)
        if spec.repeat_penalty != 1.0 or spec.frequency_penalty or spec.presence_penalty:
            penalties = L.llama_sampler_init_penalties(
                model.n_vocab, spec.penalty_last_n, spec.repeat_penalty, spec.frequency_penalty, spec.presence_penalty
            )
            L.llama_sampler_chain_add(self._ptr, penalties)
        L.llama_sampler_chain_add(self._ptr, L.llama_sampler_init_greedy())

    def sample(self, ctx: Context, idx: int) -> int:
        return int(L.llama_sampler_sample(self._ptr, ctx.ptr, idx))

    def close(self) -> None:
        L.llama_sampler_free(self._ptr)


@pytest.fixture(scope="module")
def llama(model_path: Path):
    model = Model(model_path, gpu_layers=0)
    ctx = Context(model, n_seq=1, n_ctx_seq=1024, n_batch=512, threads=share_of_cores())
    batch = Batch(512)
    yield model, ctx, batch
    batch.close()
    ctx.close()
    model.close()


def greedy(llama, prompt: str, sampler: Sampler | MaskedSampler, n: int = 96) -> list[int]:
    model, ctx, batch = llama
    ctx.seq_rm(0, 0, -1)
    batch.clear()
    tokens = model.tokenize(f"<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n")
    for i, t in enumerate(tokens):
        idx = batch.add(t, i, 0, i == len(tokens) - 1)
    ctx.decode(batch)
    out: list[int] = []
    for pos in range(len(tokens), len(tokens) + n):
        token = sampler.sample(ctx, idx)
        out.append(token)
        if model.is_eog(token):
            break
        batch.clear()
        idx = batch.add(token, pos, 0, True)
        ctx.decode(batch)
    sampler.close()
    return out


@pytest.mark.parametrize(("name", "schema", "prompt"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("penalty", [1.0, 1.3], ids=["plain", "repeat-penalty"])
def test_greedy_output_is_the_same_with_and_without_the_fast_path(llama, name, schema, prompt, penalty):
    model = llama[0]
    spec = SamplerSpec(temperature=0, repeat_penalty=penalty, grammar=json_grammar(schema))
    masked = greedy(llama, prompt, MaskedSampler(model, spec))
    fast = greedy(llama, prompt, Sampler(model, spec))
    assert fast == masked
    text = b"".join(model.piece(t) for t in fast).decode()
    assert text.lstrip().startswith("{"), text  # the grammar held


def test_a_rejected_pick_is_replaced_by_an_allowed_one(llama):
    """The model's first choice here is prose, which JSON forbids: the fast path must mask and pick again."""
    model = llama[0]
    spec = SamplerSpec(temperature=0, grammar=json_grammar(None))
    unconstrained = greedy(llama, "Say hello.", Sampler(model, SamplerSpec(temperature=0)), n=1)
    constrained = greedy(llama, "Say hello.", Sampler(model, spec), n=1)
    assert not model.piece(unconstrained[0]).strip().startswith(b"{")  # the pick the grammar rejects
    assert model.piece(constrained[0]).strip().startswith(b"{")
