"""Each model family's tool-call format, read whole and streamed in every split.

The outputs copy the shapes of llama.cpp's ``tests/test-chat.cpp``; the templates are the real ones
in ``tests/fixtures/templates`` (see its README).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_run.serving.assembly import call_input
from edge_run.serving.calls import FAMILIES, ToolStream, family_of, parse_calls, triggers

TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "templates"


def ds(words: str) -> str:
    """A DeepSeek special token (fullwidth bars, words joined by lower one-eighth blocks)."""
    return "<\uff5c" + words.replace(" ", "\u2581") + "\uff5c>"


BEGIN, END, CALL, CALL_END, SEP = (ds(w) for w in ("tool calls begin", "tool calls end", "tool call begin",
                                                   "tool call end", "tool sep"))  # fmt: skip

TEMPLATE_FAMILIES = {
    "Qwen-Qwen3-0.6B": "hermes",
    "Qwen-Qwen2.5-7B-Instruct": "hermes",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use": "hermes",
    "ibm-granite-granite-4.0": "hermes",
    "Qwen3-Coder": "qwen3_coder",
    "Qwen3.5-4B": "qwen3_coder",
    "meta-llama-Llama-3.1-8B-Instruct": "llama3",
    "meta-llama-Llama-3.2-3B-Instruct": "llama3",
    "meta-llama-Llama-3.3-70B-Instruct": "llama3",
    "Mistral-Small-3.2-24B-Instruct-2506": "mistral",
    "mistralai-Ministral-3-14B-Reasoning-2512": "mistral",
    "unsloth-mistral-Devstral-Small-2507": "mistral",
    "mistralai-Mistral-Nemo-Instruct-2407": "mistral",
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B": "deepseek_r1",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": "deepseek_r1",
    "llama-cpp-deepseek-r1": "deepseek_r1",
    "deepseek-ai-DeepSeek-V3.1": "deepseek_v3",
    "ibm-granite-granite-3.3-2B-Instruct": "granite",
    "google-gemma-4-31B-it": "gemma",
    "openai-gpt-oss-120b": "harmony",
    "HuggingFaceTB-SmolLM3-3B": "generic",
    "google-gemma-2-2b-it": "generic",
}


@pytest.mark.parametrize("name", list(TEMPLATE_FAMILIES))
def test_family_of_real_templates(name):
    assert family_of((TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")) == TEMPLATE_FAMILIES[name]


def test_every_fixture_template_is_checked_and_no_template_is_generic_by_default():
    assert {p.stem for p in TEMPLATES.glob("*.jinja")} == set(TEMPLATE_FAMILIES)
    assert family_of(None) == family_of("") == "generic"


def test_triggers():
    assert triggers("hermes") == ("<tool_call>",)
    assert triggers("qwen3_coder") == ("<tool_call>", "<function=")
    assert triggers("llama3") == ("<|python_tag|>", "{")
    assert triggers("mistral") == ("[TOOL_CALLS]",)
    assert triggers("deepseek_r1") == triggers("deepseek_v3") == (BEGIN,)
    assert triggers("granite") == ("<|tool_call|>",)
    assert triggers("gemma") == ("<|tool_call>",)
    assert triggers("generic") == ("{",)
    with pytest.raises(ValueError, match="harmony"):
        triggers("harmony")
    with pytest.raises(ValueError, match="harmony"):
        ToolStream("harmony")


ARG1 = ("special_function", {"arg1": 1})
TRICKY = {"code": 'print("}") # {"a": 1}'}  # a JSON string holding braces and quotes
TRICKY_JSON = json.dumps(TRICKY)

# name: (family, model output, content, [(call name, arguments)])
CASES: dict[str, tuple[str, str, str | None, list[tuple[str, dict]]]] = {
    "hermes": ("hermes", '<tool_call>\n{"name": "special_function", "arguments": {"arg1": 1}}\n</tool_call>', None,
               [ARG1]),
    "hermes content": ("hermes", "Hello, world!\nWhat's up?<tool_call>\n"
                       '{"name": "special_function", "arguments": {"arg1": 1}}</tool_call>',
                       "Hello, world!\nWhat's up?", [ARG1]),
    "hermes think": ("hermes", "<think>\nI'll run it.\n</think>\n\n<tool_call>\n"
                     f'{{"name": "python", "arguments": {TRICKY_JSON}}}\n</tool_call>',
                     "<think>\nI'll run it.\n</think>\n\n", [("python", TRICKY)]),
    "hermes parallel": ("hermes", '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n'
                        '<tool_call>\n{"name": "b", "arguments": {"x": [1, {"y": "]"}]}}\n</tool_call>\n', None,
                        [("a", {}), ("b", {"x": [1, {"y": "]"}]})]),
    "hermes arguments last": ("hermes", '<tool_call>{"arguments": {"x": 1}, "name": "f"}</tool_call>', None,
                              [("f", {"x": 1})]),
    "hermes not a marker": ("hermes", "Use <tool> or <tool_cal tags; <tool_call", "Use <tool> or <tool_cal tags; "
                            "<tool_call", []),
    "qwen3_coder": ("qwen3_coder", "<tool_call>\n<function=special_function>\n<parameter=arg1>\n1\n</parameter>\n"
                    "</function>\n</tool_call>", None, [ARG1]),
    "qwen3_coder no opening": ("qwen3_coder", "Let me call it.\n<function=special_function>\n<parameter=arg1>\n1\n"
                               "</parameter>\n</function>\n</tool_call>", "Let me call it.\n", [ARG1]),
    "qwen3_coder parallel": ("qwen3_coder", "<tool_call>\n<function=special_function>\n<parameter=arg1>\n1\n"
                             "</parameter>\n</function>\n</tool_call>\n<tool_call>\n"
                             "<function=special_function_with_opt>\n<parameter=arg1>\n1\n</parameter>\n"
                             "<parameter=arg2>\n2\n</parameter>\n</function>\n</tool_call>", None,
                             [ARG1, ("special_function_with_opt", {"arg1": 1, "arg2": 2})]),
    "qwen3_coder code": ("qwen3_coder", "<tool_call>\n<function=python>\n<parameter=code>\n"
                         'def hello():\n    print("Hello, {world}!")\n\nhello()\n</parameter>\n</function>\n'
                         "</tool_call>", None, [("python", {"code": 'def hello():\n    print("Hello, {world}!")\n'
                                                                   "\nhello()"})]),
    "qwen3_coder no parameters": ("qwen3_coder", "<tool_call>\n<function=empty_args>\n</function>\n</tool_call>",
                                  None, [("empty_args", {})]),
    "qwen3_coder not a marker": ("qwen3_coder", "#include <functional>\n<tool>", "#include <functional>\n<tool>",
                                 []),
    "llama3": ("llama3", '{"name": "special_function", "parameters": {"arg1": 1}}', None, [ARG1]),
    "llama3 python_tag": ("llama3", f'Let me run it.<|python_tag|>{{"name": "python", "parameters": {TRICKY_JSON}}}',
                          "Let me run it.", [("python", TRICKY)]),
    "llama3 parallel": ("llama3", '\n{"name": "a", "parameters": {}}; {"name": "b", "parameters": {"x": 1}}', None,
                        [("a", {}), ("b", {"x": 1})]),
    "llama3 json answer": ("llama3", '{"answer": "{42}"}', '{"answer": "{42}"}', []),
    "llama3 not a marker": ("llama3", "<|python|> { not json", "<|python|> { not json", []),
    "mistral v11": ("mistral", '[TOOL_CALLS]special_function[ARGS]{"arg1": 1}', None, [ARG1]),
    "mistral v11 content": ("mistral", 'Hello, world!\nWhat\'s up?[TOOL_CALLS]special_function[ARGS]{"arg1": 1}',
                            "Hello, world!\nWhat's up?", [ARG1]),
    "mistral v11 call ids": ("mistral", '[TOOL_CALLS]special_function[CALL_ID]000000001[ARGS]{"arg1": 1}'
                             "[TOOL_CALLS]python[CALL_ID]000000002[ARGS]" + TRICKY_JSON, None,
                             [ARG1, ("python", TRICKY)]),
    "mistral v3": ("mistral", '[TOOL_CALLS] [{"name": "special_function", "arguments": {"arg1": 1}}, '
                   f'{{"name": "python", "arguments": {TRICKY_JSON}}}]', None, [ARG1, ("python", TRICKY)]),
    "mistral not a marker": ("mistral", "See [TOOL] and [TOOLS_CALLS and [TOOL_CALLS] later.",
                             "See [TOOL] and [TOOLS_CALLS and [TOOL_CALLS] later.", []),
    "deepseek_r1": ("deepseek_r1", f"{BEGIN}{CALL}function{SEP}special_function\n```json\n{{\"arg1\": 1}}```"
                    f"{CALL_END}{END}", None, [ARG1]),
    "deepseek_r1 parallel": ("deepseek_r1", f"Checking.{BEGIN}{CALL}function{SEP}special_function\n```json\n"
                             f'{{"arg1": 1}}\n```{CALL_END}\n{CALL}function{SEP}python\n```json\n{TRICKY_JSON}\n```'
                             f"{CALL_END}{END}", "Checking.", [ARG1, ("python", TRICKY)]),
    "deepseek_v3": ("deepseek_v3", f'{BEGIN}{CALL}get_time{SEP}{{"city": "XYZCITY"}}{CALL_END}{END}', None,
                    [("get_time", {"city": "XYZCITY"})]),
    "deepseek_v3 parallel": ("deepseek_v3", f'CONTENT{BEGIN}{CALL}get_time{SEP}{{"city": "Paris"}}{CALL_END}'
                             f"{CALL}python{SEP}{TRICKY_JSON}{CALL_END}{END}", "CONTENT",
                             [("get_time", {"city": "Paris"}), ("python", TRICKY)]),
    "deepseek not a marker": ("deepseek_v3", f"a <\uff5ctool b {BEGIN[:-1]}", f"a <\uff5ctool b {BEGIN[:-1]}", []),
    "granite": ("granite", '<|tool_call|>[{"name": "get_weather", "arguments": {"location": "NYC"}}]', None,
                [("get_weather", {"location": "NYC"})]),
    "granite parallel": ("granite", f'Sure.<|tool_call|>[{{"name": "a", "arguments": {{}}}}, '
                         f'{{"name": "python", "arguments": {TRICKY_JSON}}}]', "Sure.",
                         [("a", {}), ("python", TRICKY)]),
    "gemma": ("gemma", '<|tool_call>call:get_time{city:<|"|>London<|"|>}<tool_call|>', None,
              [("get_time", {"city": "London"})]),
    "gemma content": ("gemma", "Hello, world!\nWhat's up?<|tool_call>call:get_time{city:<|\"|>Paris<|\"|>}<tool_call|>",
                      "Hello, world!\nWhat's up?", [("get_time", {"city": "Paris"})]),
    "gemma values": ("gemma", '<|tool_call>call:set_config{config:{theme:<|"|>dark<|"|>,count:3,on:true,off:null},'
                     'todos:[<|"|>buy milk<|"|>,<|"|>walk dog<|"|>],orig:1.5e10,neg:-7,none:[],empty:{}}<tool_call|>',
                     None, [("set_config", {"config": {"theme": "dark", "count": 3, "on": True, "off": None},
                                            "todos": ["buy milk", "walk dog"], "orig": 1.5e10, "neg": -7, "none": [],
                                            "empty": {}})]),
    "gemma parallel": ("gemma", '<|tool_call>call:empty_args{}<tool_call|><|tool_call>call:python{code:<|"|>'
                       + TRICKY["code"] + '<|"|>}<tool_call|>', None, [("empty_args", {}), ("python", TRICKY)]),
    "gemma not a marker": ("gemma", "a <|tool|> b <|tool_call", "a <|tool|> b <|tool_call", []),
    "generic": ("generic", '  {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}', None,
                [("get_weather", {"city": "Paris", "unit": "c"})]),
    "generic text": ("generic", "The weather is nice {today}.", "The weather is nice {today}.", []),
    "generic json answer": ("generic", '{"not": "a call"}', '{"not": "a call"}', []),
    "whitespace only": ("hermes", " \n", " \n", []),
}  # fmt: skip


def _fold(events):
    """(content or None, [(name, arguments text)]), checking that fragments follow a header."""
    content = "".join(e.content or "" for e in events)
    calls: list[list[str]] = []
    for e in events:
        if e.call is not None:
            calls.append([e.call.name, e.call.arguments])
            assert e.call.id.startswith("call_")
        if e.arguments:
            assert calls, "arguments before any call's header"
            calls[-1][1] += e.arguments
    return content or None, [(name, args) for name, args in calls]


def _streamed(family, pieces):
    stream = ToolStream(family)
    events = [e for piece in pieces for e in stream.push(piece)]
    more, was_call = stream.finish()
    content, calls = _fold(events + more)
    assert was_call == bool(calls)
    return content, calls


def _check(got, content, calls):
    got_content, got_calls = got
    assert got_content == content
    assert [name for name, _ in got_calls] == [name for name, _ in calls]
    assert [json.loads(args) for _, args in got_calls] == [args for _, args in calls]


@pytest.mark.parametrize("case", list(CASES))
def test_whole_text(case):
    family, text, content, calls = CASES[case]
    got_content, got = parse_calls(text, family)
    _check((got_content, [(c.name, c.arguments) for c in got]), content, calls)


@pytest.mark.parametrize("case", list(CASES))
def test_one_character_at_a_time(case):
    family, text, content, calls = CASES[case]
    _check(_streamed(family, list(text)), content, calls)


@pytest.mark.parametrize("case", list(CASES))
def test_every_split_in_two_and_three(case):
    family, text, content, calls = CASES[case]
    for i in range(len(text) + 1):
        _check(_streamed(family, [text[:i], text[i:]]), content, calls)
        j = (i + len(text)) // 2
        _check(_streamed(family, [text[:i], text[i:j], text[j:]]), content, calls)


def test_every_family_has_cases():
    assert {family for family, *_ in CASES.values()} == set(FAMILIES)


# family: (an answer cut off inside a call, the call's name, its arguments as the wire formats read them)
CUT = {
    "hermes": ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par', "get_weather", {}),
    "qwen3_coder": ("<tool_call>\n<function=f>\n<parameter=a>\n1\n</parameter>\n<parameter=b>\nhal", "f", {"a": 1}),
    "llama3": ('{"name": "get_weather", "parameters": {"city": ', "get_weather", {}),
    "mistral": ('[TOOL_CALLS]get_weather[ARGS]{"city": "Pa', "get_weather", {}),
    "deepseek_r1": (f'{BEGIN}{CALL}function{SEP}get_weather\n```json\n{{"city"', "get_weather", {}),
    "deepseek_v3": (f'{BEGIN}{CALL}get_weather{SEP}{{"city": "Paris"}}', "get_weather", {"city": "Paris"}),
    "granite": (
        '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "g',
        "get_weather",
        {"city": "Paris"},
    ),
    "gemma": ('<|tool_call>call:get_weather{city:<|"|>Par', "get_weather", {}),
    "generic": ('{"name": "get_weather", "arguments": {"city": "Paris", "unit', "get_weather", {}),
}


@pytest.mark.parametrize("family", list(CUT))
def test_a_cut_off_call_is_still_reported(family):
    text, name, arguments = CUT[family]
    whole_content, whole_calls = parse_calls(text, family)
    for content, calls in (
        (whole_content, [(c.name, c.arguments) for c in whole_calls]),
        _streamed(family, list(text)),
    ):
        assert content is None
        [(got_name, got_arguments)] = calls
        assert got_name == name
        assert call_input(got_arguments) == arguments


def test_content_streams_as_it_comes_and_only_a_possible_marker_is_held():
    stream = ToolStream("hermes")
    assert [e.content for e in stream.push("Use <to")] == ["Use "]
    assert [e.content for e in stream.push("ol> now <tool_c")] == ["<tool> now "]
    assert stream.push("all>") == []
    events = stream.push('{"name": "f", "arguments": {"a": "x')
    assert events[0].call.name == "f" and "".join(e.arguments or "" for e in events[1:]) == '{"a": "x'
    mistral = ToolStream("mistral")
    assert [e.content for e in mistral.push("[TOOL")] == []
    assert [e.content for e in mistral.push("S] are")] == ["[TOOLS] are"]
    assert mistral.finish() == ([], False)


# each answer calls `python` with TRICKY arguments: the header is out before those arguments are read
HEADER_FIRST = ["hermes think", "llama3 python_tag", "mistral v11 call ids", "mistral v3", "deepseek_r1 parallel",
                "deepseek_v3 parallel", "granite parallel", "gemma parallel"]  # fmt: skip


@pytest.mark.parametrize("case", HEADER_FIRST)
def test_the_header_goes_out_once_the_name_is_known_and_json_arguments_stream(case):
    family, text, _, _ = CASES[case]
    stream = ToolStream(family)
    events = stream.push(text[: text.index("print")])
    names = [e.call.name for e in events if e.call is not None]
    assert names[-1] == "python"
    last = max(i for i, e in enumerate(events) if e.call is not None)
    sent = "".join(e.arguments or "" for e in events[last:])
    if family != "gemma":  # Gemma's strings are converted once they close
        assert sent and TRICKY_JSON.startswith(sent.strip())


def test_qwen3_coder_sends_each_parameter_once_it_closes():
    stream = ToolStream("qwen3_coder")
    text = CASES["qwen3_coder parallel"][1]
    cut = text.index("<parameter=arg2>")
    events = stream.push(text[:cut])
    assert [e.call.name for e in events if e.call] == ["special_function", "special_function_with_opt"]
    assert events[-1].arguments == '{"arg1": 1'
    rest = [*stream.push(text[cut:]), *stream.finish()[0]]
    assert "".join(e.arguments or "" for e in rest) == ', "arg2": 2}'


def test_qwen3_coder_types_values_by_the_schema_else_as_json_where_it_parses():
    params = {"zip": "007", "n": "42", "label": "42", "opts": '{"a": [1]}', "maybe": "null", "either": "abc",
              "flag": "true"}  # fmt: skip
    body = "".join(f"<parameter={k}>\n{v}\n</parameter>\n" for k, v in params.items())
    text = f"<tool_call>\n<function=f>\n{body}</function>\n</tool_call>"
    properties = {
        "n": {"type": "integer"},
        "label": {"type": "string"},
        "opts": {"type": "object"},
        "maybe": {"type": ["string", "null"]},
        "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    }
    schemas = {"f": {"type": "object", "properties": properties}}
    [call] = parse_calls(text, "qwen3_coder", schemas)[1]
    assert json.loads(call.arguments) == {"zip": "007", "n": 42, "label": "42", "opts": {"a": [1]}, "maybe": None,
                                          "either": "abc", "flag": True}  # fmt: skip
    [untyped] = parse_calls(text, "qwen3_coder")[1]
    assert json.loads(untyped.arguments)["label"] == 42
