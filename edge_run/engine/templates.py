"""Chat templates: the GGUF's own Jinja template, or ChatML when the file has none."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import jinja2
import jinja2.meta
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


_PASSED = frozenset({"messages", "tools", "add_generation_prompt", "bos_token", "eos_token"})


def _raise(message: str) -> None:
    raise jinja2.TemplateError(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
            sort_keys: bool = False) -> str:  # fmt: skip
    """HF's ``tojson``: plain JSON (Jinja's own escapes ``<`` and ``>`` as HTML would), and ``map`` s made lists."""

    def listed(obj: Any) -> Any:
        if isinstance(obj, Iterable) and not isinstance(obj, str | bytes | dict):
            return list(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")

    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys,
                      default=listed)  # fmt: skip


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class ChatTemplate:
    """Renders messages the way the model was trained to read them (HF ``apply_chat_template`` rules)."""

    def __init__(self, source: str | None, *, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader())
        env.globals.update(raise_exception=_raise, strftime_now=_strftime_now)
        env.filters["tojson"] = _tojson
        self.source = source or CHATML
        try:
            self._template = env.from_string(self.source)
        except jinja2.TemplateError:
            self.source = CHATML
            self._template = env.from_string(CHATML)
        # what a request's `chat_template_kwargs` may set: the names the template reads and nobody passes
        read = jinja2.meta.find_undeclared_variables(env.parse(self.source))
        self.variables = frozenset(read - set(env.globals) - _PASSED)
        self._bos, self._eos = bos_token, eos_token
        self.supports_tools = self._renders_tools()

    def _renders_tools(self) -> bool:
        """Whether the template puts a tool list into the prompt (then the model has a native format)."""
        schema = {"type": "object", "properties": {}}
        probe = {"type": "function", "function": {"name": "edge_run_probe", "description": "", "parameters": schema}}
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
        variables: dict[str, Any] | None = None,
    ) -> str:
        """``variables`` are the extra names the template reads (``enable_thinking``, ``reasoning_effort``...)."""
        try:
            return self._template.render(
                **(variables or {}),
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
