"""Thinking apart from the answer: formats told from real chat templates, controls passed as each family reads
them, and the splitter on realistic outputs cut at awkward places."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_run.engine.templates import ChatTemplate
from edge_run.errors import InvalidRequest
from edge_run.serving.reasoning import Thinking, splitter, template_variables, think_format

TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "templates"


def template(name: str) -> ChatTemplate:
    return ChatTemplate((TEMPLATES / name).read_text(), bos_token="<s>", eos_token="</s>")


@pytest.mark.parametrize(
    ("name", "open_", "close", "harmony"),
    [
        ("Qwen-Qwen3-0.6B.jinja", "<think>", "</think>", False),
        ("HuggingFaceTB-SmolLM3-3B.jinja", "<think>", "</think>", False),
        ("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja", "<think>", "</think>", False),
        ("deepseek-ai-DeepSeek-V3.1.jinja", "<think>", "</think>", False),
        ("google-gemma-4-31B-it.jinja", "<|channel>thought", "<channel|>", False),
        ("mistralai-Ministral-3-14B-Reasoning-2512.jinja", "[THINK]", "[/THINK]", False),
        ("openai-gpt-oss-120b.jinja", "<|channel|>analysis<|message|>", "<|end|>", True),
    ],
)
def test_each_familys_template_announces_its_thinking_format(name, open_, close, harmony):
    fmt = think_format(template(name).source)
    assert fmt is not None
    assert (fmt.open, fmt.close, fmt.harmony) == (open_, close, harmony)


def test_a_template_without_thoughts_has_no_format():
    assert think_format(ChatTemplate(None).source) is None


def render(name: str, thinking: Thinking | None, kwargs: dict | None = None) -> str:
    t = template(name)
    return t.render([{"role": "user", "content": "hi"}], variables=template_variables(thinking, kwargs, t.variables))


def test_the_switch_reaches_each_template_under_the_name_it_reads():
    # Qwen3 reads enable_thinking: off, it writes an empty thought into the prompt itself
    assert render("Qwen-Qwen3-0.6B.jinja", Thinking(enabled=False)).endswith("<think>\n\n</think>\n\n")
    assert render("Qwen-Qwen3-0.6B.jinja", Thinking(enabled=True)).endswith("<|im_start|>assistant\n")
    # DeepSeek V3.1 reads `thinking`: on, the prompt opens the thought
    assert render("deepseek-ai-DeepSeek-V3.1.jinja", Thinking(enabled=True)).endswith("<think>")
    assert render("deepseek-ai-DeepSeek-V3.1.jinja", Thinking(enabled=False)).endswith("<think></think>")
    # gpt-oss reads reasoning_effort into its system message
    assert "Reasoning: high" in render("openai-gpt-oss-120b.jinja", Thinking(enabled=True, effort="high"))
    assert "Reasoning: low" in render("openai-gpt-oss-120b.jinja", Thinking(enabled=False, effort="low"))


def test_chat_template_kwargs_pass_through_and_an_unknown_key_is_named():
    assert render("Qwen-Qwen3-0.6B.jinja", None, {"enable_thinking": False}).endswith("</think>\n\n")
    # an explicit kwarg wins over the switch
    assert render("Qwen-Qwen3-0.6B.jinja", Thinking(enabled=True), {"enable_thinking": False}).endswith("</think>\n\n")
    with pytest.raises(InvalidRequest) as err:
        render("Qwen-Qwen3-0.6B.jinja", None, {"enable_thinkin": False})
    assert err.value.param == "chat_template_kwargs.enable_thinkin"
    assert "enable_thinking" in err.value.message  # the names it does read


def feed(split, text: str, step: int) -> list[tuple[str, str]]:
    parts = [p for i in range(0, len(text), step) for p in split.push(text[i : i + step])]
    parts += split.finish()
    merged: list[tuple[str, str]] = []
    for kind, value in parts:  # consecutive parts of a kind are one
        if merged and merged[-1][0] == kind and kind != "call":
            merged[-1] = (kind, merged[-1][1] + value)
        else:
            merged.append((kind, value))
    return merged


QWEN = think_format("<think>")
STEPS = [1, 2, 3, 5, 7, 1000]


@pytest.mark.parametrize("step", STEPS)
def test_a_leading_thought_is_reasoning_and_the_rest_content(step):
    text = "<think>\nThe user greets me.\nI greet back.\n</think>\n\nHello! How can I help?"
    assert feed(splitter(QWEN, opened=False), text, step) == [
        ("reasoning", "The user greets me.\nI greet back."),
        ("content", "Hello! How can I help?"),
    ]


@pytest.mark.parametrize("step", STEPS)
def test_a_thought_the_prompt_opened_has_only_its_closing_tag(step):
    text = "Okay, 2+2 is 4.\n</think>\n\nThe answer is 4."
    assert feed(splitter(QWEN, opened=True), text, step) == [
        ("reasoning", "Okay, 2+2 is 4."),
        ("content", "The answer is 4."),
    ]


@pytest.mark.parametrize("step", STEPS)
def test_a_thought_the_prompt_opened_may_open_it_again(step):
    text = "<think>\nOkay.\n</think>\n\nFour."
    assert feed(splitter(QWEN, opened=True), text, step) == [("reasoning", "Okay."), ("content", "Four.")]


@pytest.mark.parametrize("step", STEPS)
def test_no_thought_and_look_alikes_stay_content(step):
    assert feed(splitter(QWEN, opened=False), "Hello <think> is a tag", step) == [("content", "Hello <think> is a tag")]
    assert feed(splitter(QWEN, opened=False), "<thi", step) == [("content", "<thi")]
    assert feed(splitter(QWEN, opened=False), "<thinking>x", step) == [("content", "<thinking>x")]


@pytest.mark.parametrize("step", STEPS)
def test_a_thought_cut_off_by_max_tokens_is_all_reasoning(step):
    assert feed(splitter(QWEN, opened=False), "<think>\nstill thinking </th", step) == [
        ("reasoning", "still thinking </th")
    ]


@pytest.mark.parametrize("step", STEPS)
def test_a_tool_call_after_the_thought_is_left_in_the_content(step):
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    text = f"<think>\nI should call <tool_call> for Paris.\n</think>\n\n{call}"
    assert feed(splitter(QWEN, opened=False), text, step) == [
        ("reasoning", "I should call <tool_call> for Paris."),
        ("content", call),
    ]


@pytest.mark.parametrize("step", STEPS)
def test_gemma4_and_magistral_tags(step):
    gemma = think_format(template("google-gemma-4-31B-it.jinja").source)
    text = "<|channel>thought\nPlan the answer.<channel|>Bonjour."
    expected = [("reasoning", "Plan the answer."), ("content", "Bonjour.")]
    assert feed(splitter(gemma, opened=False), text, step) == expected
    magistral = think_format(template("mistralai-Ministral-3-14B-Reasoning-2512.jinja").source)
    text = "[THINK]Compute 6*7.[/THINK]42"
    assert feed(splitter(magistral, opened=False), text, step) == [("reasoning", "Compute 6*7."), ("content", "42")]


HARMONY = think_format("<|channel|>")


@pytest.mark.parametrize("step", STEPS)
def test_harmony_analysis_is_reasoning_and_final_the_answer(step):
    text = (
        "<|channel|>analysis<|message|>User says hi. Reply politely.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Hi there!"
    )
    split = splitter(HARMONY, opened=False)
    assert feed(split, text, step) == [("reasoning", "User says hi. Reply politely."), ("content", "Hi there!")]
    assert split.opened and split.closed


@pytest.mark.parametrize("step", STEPS)
def test_harmony_commentary_to_a_function_is_a_call(step):
    text = (
        "<|channel|>analysis<|message|>Need the weather tool.<|end|>"
        '<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris"}'
    )
    assert feed(splitter(HARMONY, opened=False), text, step) == [
        ("reasoning", "Need the weather tool."),
        ("call", "get_weather"),
        ("args", '{"city": "Paris"}'),
    ]


def test_harmony_recipient_before_the_channel_and_a_preamble():
    text = (
        "<|channel|>commentary<|message|>Let me check.<|end|>"
        '<|start|>assistant to=functions.lookup<|channel|>commentary json<|message|>{"q": 1}<|call|>'
    )
    assert feed(splitter(HARMONY, opened=False), text, 4) == [
        ("content", "Let me check."),
        ("call", "lookup"),
        ("args", '{"q": 1}'),
    ]


def test_a_grammar_holds_only_what_follows_the_thought():
    from edge_run.serving.request import JsonOutput
    from edge_run.serving.sampling import grammar

    gbnf = grammar(JsonOutput(None, "response_format"), None, think=QWEN, opened=False)
    assert gbnf is not None and 'root ::= ("<think>" edge-thought [ \\t\\n]*)? edge-answer' in gbnf
    assert 'edge-thought ::= ([^<] | "<" [^/])* "</think>"' in gbnf
    opened = grammar(JsonOutput(None, "response_format"), None, think=QWEN, opened=True)
    assert opened is not None and "root ::= (edge-thought [ \\t\\n]*) edge-answer" in opened
    assert grammar(JsonOutput(None, "response_format"), None) == grammar(JsonOutput(None, "x"), None, think=None)


def budget_run(pieces: list[str], tokens: int, opened: bool) -> str:
    """The text a budgeted choice writes when ``pieces`` are what its sampler picks, one token each."""
    from edge_run.engine.budget import Budget
    from edge_run.engine.types import ThoughtLimit

    vocab = [*dict.fromkeys([*pieces, "\n</think>\n\n"])]
    limit = ThoughtLimit(tokens, "<think>", "</think>", "\n</think>\n\n", opened)
    budget = Budget(limit, [vocab.index("\n</think>\n\n")], lambda t: vocab[t].encode())
    return "".join(vocab[budget.pick(vocab.index(p))] for p in pieces)


def test_a_thought_over_budget_is_closed_and_the_answer_goes_on():
    sampled = ["<think>", "a", "b", "c", "d", "e", "f"]
    assert budget_run(sampled, 3, opened=False) == "<think>abc\n</think>\n\nef"
    assert budget_run(["a", "b", "c", "d"], 2, opened=True) == "ab\n</think>\n\nd"
    assert budget_run(["a", "b", "c"], 0, opened=True) == "\n</think>\n\nbc"


def test_a_thought_within_budget_and_an_answer_without_one_are_untouched():
    assert budget_run(["<think>", "a", "</think>", "b", "c", "d"], 3, opened=False) == "<think>a</think>bcd"
    assert budget_run(["Hi", "a", "b", "c"], 1, opened=False) == "Hiabc"
