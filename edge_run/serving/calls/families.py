"""Which tool-call format a model writes, told from its chat template's source.

A template that renders tools shows the model its call format, so the markers in the Jinja source
name the family, as llama.cpp's ``common/chat.cpp`` detects them. The checks run most distinctive
first: Qwen3-Coder's XML sits inside ``<tool_call>`` too, and Granite 4.0 writes Hermes calls.
"""

from __future__ import annotations

from edge_run.serving.calls.json_calls import CALLS_BEGIN

__all__ = ["BARE", "FAMILIES", "family_of", "triggers"]

# family -> the literal texts its calls begin with, anywhere in an answer
_TRIGGERS: dict[str, tuple[str, ...]] = {
    "hermes": ("<tool_call>",),
    "qwen3_coder": ("<tool_call>", "<function="),
    "llama3": ("<|python_tag|>",),
    "mistral": ("[TOOL_CALLS]",),
    "deepseek_r1": (CALLS_BEGIN,),
    "deepseek_v3": (CALLS_BEGIN,),
    "granite": ("<|tool_call|>",),
    "gemma": ("<|tool_call>",),
    "generic": (),
}
FAMILIES = tuple(_TRIGGERS)  # the families this package parses ("harmony" is parsed elsewhere)
BARE = frozenset({"llama3", "generic"})  # a call may also be a bare JSON object opening the answer


def family_of(template: str | None) -> str:
    """The family whose calls a chat template's source asks for; ``"generic"`` if it shows none."""
    src = template or ""
    if "<|channel|>" in src:
        return "harmony"  # gpt-oss
    if "<|tool_call>" in src:
        return "gemma"
    if CALLS_BEGIN in src:
        return "deepseek_r1" if "```json" in src else "deepseek_v3"
    if "[TOOL_CALLS]" in src:
        return "mistral"
    if "<tool_call>" in src:
        return "qwen3_coder" if "<function=" in src and "<parameter=" in src else "hermes"
    if "<|tool_call|>" in src:
        return "granite"
    if "<|python_tag|>" in src or ('"parameters": ' in src and "<|start_header_id|>" in src):
        return "llama3"
    return "generic"


def triggers(family: str) -> tuple[str, ...]:
    """The literal texts where ``family``'s calls begin (for a lazy grammar).

    ``"{"`` stands for a bare JSON call (Llama 3, generic), which only counts at the answer's start.
    """
    if family not in _TRIGGERS:
        raise ValueError(f"no tool-call parser for family `{family}`")
    return _TRIGGERS[family] + (("{",) if family in BARE else ())
