"""Chat templates: the GGUF's own Jinja template, or ChatML when the file has none."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edge_run.errors import InvalidRequest

__all__ = ["CHATML", "ChatTemplate"]

# The fallback for GGUFs without ``tokenizer.chat_template`` (documented in the README).
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """Renders messages the way the model was trained to read them (HF ``apply_chat_template`` rules)."""

    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader())
        env.globals.update(raise_exception=_raise, strftime_now=_strftime_now)
        try:
            self._template = env.from_string(source or CHATML)
        except jinja2.TemplateError:
            self._template = env.from_string(CHATML)
        self._bos, self._eos = bos_token, eos_token
        self.supports_tools = self._renders_tools()

    def _renders_tools(self) -> bool:
        """Whether the template puts a tool list into the prompt (then the model has a native format)."""
        probe = {"type": "function", "function": {"name": "edge_run_probe", "parameters": {"type": "object"}}}
        try:
            return "edge_run_probe" in self.render([{"role": "user", "content": "hi"}], tools=[probe])
        except Exception:
            return False

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        try:
            return self._template.render(
                messages=messages,
                tools=tools,
                add_generation_prompt=add_generation_prompt,
                bos_token=self._bos,
                eos_token=self._eos,
            )
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError) as exc:
            # the model's template refused these messages (e.g. roles that must alternate)
            message = f"the model's chat template rejected the messages: {exc}"
            raise InvalidRequest(message, param="messages") from exc
