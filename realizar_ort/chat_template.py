"""Render chat messages through a model's own ``chat_template.jinja``, as Hugging Face templates expect.

The environment mirrors transformers' `apply_chat_template`: a sandboxed, immutable jinja2 environment
(templates cannot touch Python objects or mutate inputs) with `trim_blocks` and `lstrip_blocks`, the
`loopcontrols` extension, the `{% generation %}` tag (a no-op here), `raise_exception(msg)`,
`strftime_now(fmt)` and a `tojson` filter that keeps non-ASCII text and does no HTML escaping. Special
tokens (`bos_token`, `eos_token`, ...) are passed as variables. The template is compiled once; `render`
is safe to call from many threads. An error raised by the template (`raise_exception`, an undefined
variable used wrongly) is the caller's fault: `InvalidRequestError` with param ``messages``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import InvalidRequestError

__all__ = ["RESERVED_VARIABLES", "ChatTemplate", "ChatTemplateError"]

# Template variables a request sets itself; extra variables (chat_template_kwargs) may not replace them.
RESERVED_VARIABLES = frozenset({"messages", "tools", "documents", "add_generation_prompt", "continue_final_message"})


class ChatTemplateError(ValueError):
    """The template file itself is broken (syntax error): a setup problem, not a request problem."""


class _GenerationTag(Extension):
    """``{% generation %}...{% endgeneration %}`` marks assistant text for training masks; render its body."""

    tags: ClassVar[set[str]] = {"generation"}

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    @staticmethod
    def _render_body(caller: Any) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[loopcontrols, _GenerationTag],
        keep_trailing_newline=False,
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate:
    """A compiled chat template plus the special-token variables it is rendered with."""

    def __init__(self, source: str, special_tokens: Mapping[str, str] | None = None) -> None:
        try:
            self._template = _environment().from_string(source)
        except jinja2.exceptions.TemplateSyntaxError as exc:
            raise ChatTemplateError(
                f"chat template syntax error at line {exc.lineno}: {exc.message}"
            ) from exc
        self.source = source
        self.special_tokens = dict(special_tokens or {})

    @classmethod
    def from_file(cls, path: str | Path, special_tokens: Mapping[str, str] | None = None) -> ChatTemplate:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"chat template {path} not found")
        return cls(path.read_text(encoding="utf-8"), special_tokens)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        **template_kwargs: Any,
    ) -> str:
        """The prompt text for `messages` (OpenAI-style dicts). Extra kwargs become template variables
        (e.g. ``date_string`` for Llama 3) and override the special tokens, as in transformers; they may
        not be one of `RESERVED_VARIABLES`. ``tools`` and ``documents`` are None when absent, as in
        transformers. Deterministic for equal inputs, except where the template calls ``strftime_now``
        (Meta's Llama 3.2 template writes today's date unless ``date_string`` is given)."""
        if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)):
            raise InvalidRequestError("messages must be a list of message objects", "messages")
        messages = [_checked_message(m, i) for i, m in enumerate(messages)]
        reserved = RESERVED_VARIABLES.intersection(template_kwargs)
        if reserved:
            raise InvalidRequestError(
                f"chat_template_kwargs may not set {', '.join(sorted(reserved))}: the request sets it", "chat_template_kwargs"
            )
        variables: dict[str, Any] = {**self.special_tokens, **template_kwargs}
        variables["messages"] = messages
        variables["add_generation_prompt"] = add_generation_prompt
        variables["tools"] = tools  # transformers always defines these two, as None when absent
        variables.setdefault("documents", None)
        try:
            return self._template.render(**variables)
        except jinja2.exceptions.TemplateError as exc:
            raise InvalidRequestError(f"chat template rejected the messages: {exc}", "messages") from exc
        except RecursionError:  # a value (e.g. a tool's parameters schema) nested past what jinja can walk
            raise InvalidRequestError("chat template could not render the messages: a value is nested too deeply",
                                      "messages") from None
        except (TypeError, AttributeError, KeyError, IndexError) as exc:
            # a value of a type the template does not expect (e.g. a tool call's arguments as a number)
            raise InvalidRequestError(f"chat template could not render the messages: {type(exc).__name__}: {exc}",
                                      "messages") from None


def _checked_message(message: Any, i: int) -> Mapping[str, Any]:
    """``message`` with its ``content`` as a string or None (an array of text parts is joined), or a 400."""
    if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
        raise InvalidRequestError(f"messages[{i}] must be an object with a string 'role'", "messages")
    content = message.get("content")
    if content is None or isinstance(content, str):
        return message
    if isinstance(content, (list, tuple)):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequestError(f"messages[{i}].content[{j}] must be a text part "
                                          "{\"type\": \"text\", \"text\": str}", f"messages[{i}].content")
            parts.append(part["text"])
        return {**message, "content": "".join(parts)}
    raise InvalidRequestError(f"messages[{i}].content must be a string, null or a list of text parts, got "
                              f"{type(content).__name__}", f"messages[{i}].content")
