"""A native family's calls held by a lazy grammar, on the real vocabulary: free text until the call's trigger,
then only what keeps the call valid against its tool's schema (llama.cpp's own lazy grammar sampler)."""

from __future__ import annotations

import ctypes

import llama_cpp as L
import numpy as np
import pytest

from edge_run.engine.llama.model import Model
from edge_run.engine.llama.sampler import _grammar
from edge_run.serving.lazy import lazy_calls
from edge_run.serving.reasoning import think_format

pytestmark = pytest.mark.integration

WEATHER = {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def model(model_path):
    m = Model(model_path, gpu_layers=0)
    yield m
    m.close()


def allowed(model: Model, sampler, texts: list[str]) -> list[bool]:
    """Whether the sampler's grammar lets each text's first token come next."""
    ids = [model.tokenize(t, add_special=False)[0] for t in texts]
    data = (L.llama_token_data * len(ids))(*[L.llama_token_data(i, 1.0, 0.0) for i in ids])
    arr = L.llama_token_data_array(data, len(ids), -1, False)
    L.llama_sampler_apply(sampler, ctypes.byref(arr))
    return [bool(np.isfinite(data[k].logit)) for k in range(len(ids))]


def feed(model: Model, sampler, text: str) -> None:
    for token in model.tokenize(text, add_special=False):
        L.llama_sampler_accept(sampler, token)


OTHER = {"name": "set_alarm", "parameters": {"type": "object", "properties": {"at": {"type": "integer"}}}}
BEGIN, CALL = "<\uff5ctool\u2581calls\u2581begin\uff5c>", "<\uff5ctool\u2581call\u2581begin\uff5c>"
SEP = "<\uff5ctool\u2581sep\uff5c>"
# (the family, its template's marker, the text up to where only the tool's name may come, what follows the name
# up to the city's value, whose first token must be one of two: a JSON string's quote, not a number)
CASES = [
    ("hermes", "", '<tool_call>\n{"name": "', '", "arguments": {"city": '),
    ("granite", "", '<|tool_call|>[{"name": "', '", "arguments": {"city": '),
    ("mistral", "[ARGS]", "[TOOL_CALLS]", '[ARGS]{"city": '),
    ("mistral", "", '[TOOL_CALLS][{"name": "', '", "arguments": {"city": '),
    ("deepseek_r1", "", f"{BEGIN}{CALL}function{SEP}", '\n```json\n{"city": '),
    ("deepseek_v3", "", f"{BEGIN}{CALL}", f'{SEP}{{"city": '),
    ("llama3", "", '<|python_tag|>{"name": "', '", "parameters": {"city": '),
    ("harmony", "", "to=functions.", ' <|constrain|>json<|message|>{"city": '),
    ("qwen3_coder", "", "<tool_call>\n<function=", ">\n"),  # then the required city's tag, nothing else
]


@pytest.mark.parametrize(("family", "marker", "head", "tail"), CASES)
def test_text_is_free_until_the_call_begins_then_the_call_is_held(model, family, marker, head, tail):
    gbnf, triggers = lazy_calls(family, [WEATHER, OTHER], None, marker)
    sampler = _grammar(model, gbnf, triggers)
    assert sampler, "the grammar compiles"
    try:
        feed(model, sampler, "Let me look that up. ")
        assert allowed(model, sampler, ["Hello", "{", " maybe"]) == [True, True, True]  # free text
        feed(model, sampler, head)
        # only a tool's name may follow: not another word
        assert allowed(model, sampler, ["get", "set", "Hello"]) == [True, True, False]
        feed(model, sampler, "get_weather" + tail)
        if family == "qwen3_coder":
            assert allowed(model, sampler, ["<", "Hello"]) == [True, False]  # `<parameter=city>`: it is required
        else:
            assert allowed(model, sampler, ['"', "1"]) == [True, False]  # the city is a string, not a number
    finally:
        L.llama_sampler_free(sampler)


def test_a_bare_llama3_call_first_thing_is_held(model):
    gbnf, triggers = lazy_calls("llama3", [WEATHER], None, "")
    sampler = _grammar(model, gbnf, triggers)
    try:
        feed(model, sampler, '{"name": "')
        assert allowed(model, sampler, ["get", "Hello"]) == [True, False]
    finally:
        L.llama_sampler_free(sampler)


def test_a_call_inside_the_thought_is_not_held(model):
    gbnf, triggers = lazy_calls("hermes", [WEATHER], think_format("<think>"), "")
    sampler = _grammar(model, gbnf, triggers)
    try:
        feed(model, sampler, "<think>\nI could write <tool_call> here")
        assert allowed(model, sampler, ["Hello", " maybe"]) == [True, True]  # still free: it was thought
        feed(model, sampler, "\n</think>\n\n<tool_call>\n{\"name\": \"")
        assert allowed(model, sampler, ["get", "Hello"]) == [True, False]
    finally:
        L.llama_sampler_free(sampler)


@pytest.mark.parametrize(("family", "marker", "head", "tail"), [c for c in CASES if c[0] != "harmony"])
def test_a_forced_call_is_held_in_the_familys_syntax_after_the_thought(model, family, marker, head, tail):
    from edge_run.serving.sampling import after_thought

    gbnf, _ = lazy_calls(family, [WEATHER], None, marker)
    sampler = _grammar(model, after_thought(gbnf, think_format("<think>"), opened=False), ())
    assert sampler, "the grammar compiles"
    try:
        feed(model, sampler, "<think>\nThe weather, then.\n</think>\n\n")
        assert allowed(model, sampler, [head[0], "Hello"]) == [True, False]  # the call, at once
        feed(model, sampler, head)
        assert allowed(model, sampler, ["get", "set"]) == [True, False]  # the one tool
    finally:
        L.llama_sampler_free(sampler)
