"""Ollama's wire fields in edge-run's terms: keep_alive durations, options, and what is refused."""

from __future__ import annotations

import msgspec
import pytest

from edge_run.api.ollama.describe import rfc3339
from edge_run.api.ollama.schemas import ChatRequest, GenerateRequest
from edge_run.api.ollama.translate import keep_alive_seconds, translate_chat, translate_generate
from edge_run.errors import InvalidRequest


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), (30, 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("0", 0.0), ("-1", -1.0), (-5, -1.0), ("1.5s", 1.5),
     ("-10m", -1.0), ("250ms", 0.25)],
)  # fmt: skip
def test_keep_alive_takes_seconds_and_go_durations(value, seconds):
    assert keep_alive_seconds(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 m", "m5", "1d", ""])
def test_a_keep_alive_that_is_no_duration_is_a_400(value):
    with pytest.raises(InvalidRequest) as err:
        keep_alive_seconds(value)
    assert err.value.param == "keep_alive"


def chat(**body) -> ChatRequest:
    return msgspec.convert({"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}, ChatRequest)


def test_options_reach_the_sampler_and_the_limits():
    gen = translate_chat(chat(options={"temperature": 0.2, "top_k": 5, "num_predict": 7, "stop": ["x"], "seed": 3}))
    assert (gen.sampling.temperature, gen.sampling.top_k, gen.sampling.seed) == (0.2, 5, 3)
    assert (gen.max_tokens, gen.stops) == (7, ("x",))
    assert translate_chat(chat(options={"num_predict": -1})).max_tokens is None


def test_unknown_options_and_wrong_types_are_refused_by_the_schema():
    for options in ({"temprature": 1}, {"temperature": "hot"}, {"top_k": -1}):
        with pytest.raises(msgspec.ValidationError, match=r"\$\.options"):
            chat(options=options)


@pytest.mark.parametrize("options", [{"mirostat": 2}, {"tfs_z": 0.5}, {"typical_p": 0.9}, {"num_predict": 0}])
def test_options_edge_run_cannot_honour_are_a_400(options):
    with pytest.raises(InvalidRequest):
        translate_chat(chat(options=options))


def test_format_think_and_tools_take_the_openai_paths():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    gen = translate_chat(chat(format=schema, think="high"))
    assert gen.output is not None and gen.output.schema == schema and gen.output.param == "format"
    assert gen.thinking is not None and gen.thinking.enabled and gen.thinking.effort == "high"
    assert translate_chat(chat(format="json")).output.schema is None  # type: ignore[union-attr]
    assert translate_chat(chat(think=False)).thinking.enabled is False  # type: ignore[union-attr]


def test_images_and_generate_only_fields_are_refused():
    with pytest.raises(InvalidRequest, match="is not a PNG"):  # "hi" in base64
        translate_chat(chat(messages=[{"role": "user", "content": "hi", "images": ["aGk="]}]))
    for field, value in (("template", "{{ .Prompt }}"), ("suffix", "end"), ("context", [1, 2])):
        with pytest.raises(InvalidRequest) as err:
            translate_generate(msgspec.convert({"model": "m", "prompt": "p", field: value}, GenerateRequest))
        assert err.value.param == field


def test_generate_renders_a_conversation_unless_raw():
    req = msgspec.convert({"model": "m", "prompt": "p", "system": "s"}, GenerateRequest)
    assert [(t.role, t.content) for t in translate_generate(req).turns] == [("system", "s"), ("user", "p")]
    raw = translate_generate(msgspec.convert({"model": "m", "prompt": "p", "raw": True}, GenerateRequest))
    assert (raw.turns, raw.prompts) == ([], ["p"])


def test_a_keep_alive_of_ten_to_the_sixteen_seconds_expires_at_the_end_of_year_9999():
    """`/api/ps` once answered 500 on such a keep-alive, sent by the fuzz run: Python's dates end in 9999."""
    assert rfc3339(1e16) == "9999-12-31T23:59:59Z"
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
