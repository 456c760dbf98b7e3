"""Tool definitions, tool calls and tool_choice, converted from and to the OpenAI wire shapes.

`ToolDefinition` is one entry of a request's ``tools`` (``{"type": "function", "function": {...}}``);
`ToolCall` is one entry of an assistant message's ``tool_calls`` (``function.arguments`` is a JSON
*string* on the wire and a parsed object here, with the exact text kept beside it). `ToolChoice` is the
normalised ``tool_choice``. `normalize_messages` turns OpenAI chat messages into the plain dicts the
prompt strategies render (string content, parsed past-call arguments).

Every validation failure raises `InvalidRequestError` whose ``param`` names the bad field, e.g.
``tools[1].function.name``. Nothing here is on a hot path; all of it is pure and thread-safe.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import InvalidRequestError

__all__ = [
    "ToolCall",
    "ToolChoice",
    "ToolDefinition",
    "new_call_id",
    "normalize_messages",
    "parse_tool_choice",
    "parse_tools",
]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
_ID_ALPHABET = string.ascii_letters + string.digits
# Omitted ``parameters`` means "no arguments" (OpenAI): exactly ``{}``.
_EMPTY_PARAMETERS: Mapping[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}
_ROLES = ("system", "developer", "user", "assistant", "tool", "ipython")


def new_call_id() -> str:
    """A fresh OpenAI-style tool call id: ``call_`` + 24 random alphanumerics."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass(frozen=True)
class ToolDefinition:
    """One function the model may call: its name, description and JSON Schema for the arguments."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(_EMPTY_PARAMETERS))
    strict: bool | None = None
    source: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)  # the dict as sent

    @classmethod
    def from_openai(cls, tool: Any, param: str = "tools[0]") -> ToolDefinition:
        """Build from ``{"type": "function", "function": {"name", "description", "parameters", "strict"}}``."""
        if not isinstance(tool, Mapping):
            raise InvalidRequestError(f"{param} must be an object, got {_kind(tool)}", param)
        if tool.get("type", "function") != "function":
            raise InvalidRequestError(
                f"{param}.type must be 'function', got {tool.get('type')!r}", f"{param}.type"
            )
        fn = tool.get("function")
        if not isinstance(fn, Mapping):
            raise InvalidRequestError(f"{param}.function must be an object, got {_kind(fn)}", f"{param}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequestError(
                f"{param}.function.name must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-', got {name!r}",
                f"{param}.function.name",
            )
        description = fn.get("description")
        if description is not None and not isinstance(description, str):
            raise InvalidRequestError(
                f"{param}.function.description must be a string, got {_kind(description)}",
                f"{param}.function.description",
            )
        parameters = fn.get("parameters")
        if parameters is None:
            parameters = dict(_EMPTY_PARAMETERS)
        elif not isinstance(parameters, Mapping):
            raise InvalidRequestError(
                f"{param}.function.parameters must be a JSON Schema object, got {_kind(parameters)}",
                f"{param}.function.parameters",
            )
        elif parameters.get("type", "object") != "object":
            raise InvalidRequestError(
                f"{param}.function.parameters must describe an object (type 'object'), "
                f"got type {parameters.get('type')!r}",
                f"{param}.function.parameters",
            )
        strict = fn.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise InvalidRequestError(
                f"{param}.function.strict must be a boolean, got {_kind(strict)}", f"{param}.function.strict"
            )
        return cls(name=name, description=description, parameters=parameters, strict=strict, source=tool)

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI ``tools[]`` entry; keys in OpenAI's order (name, description, parameters)."""
        fn: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            fn["description"] = self.description
        fn["parameters"] = self.parameters
        if self.strict is not None:
            fn["strict"] = self.strict
        return {"type": "function", "function": fn}

    def as_sent(self) -> Mapping[str, Any]:
        """The ``tools[]`` entry exactly as the client sent it (what a chat template lists, as in
        transformers and vLLM), or `to_openai` for a definition built in code."""
        return self.source if self.source is not None else self.to_openai()


@dataclass(frozen=True)
class ToolCall:
    """One call the model made. `arguments_json` is the exact JSON text (OpenAI's ``function.arguments``);
    `arguments` is its parsed object, or None when the text is not a JSON object (only possible when the
    generation was cut off by ``max_tokens`` in the middle of a call)."""

    id: str
    name: str
    arguments_json: str
    arguments: dict[str, Any] | None

    @classmethod
    def create(cls, name: str, arguments: Mapping[str, Any], call_id: str | None = None) -> ToolCall:
        text = json.dumps(arguments, ensure_ascii=False, separators=(",", ":"))
        return cls(id=call_id or new_call_id(), name=name, arguments_json=text, arguments=dict(arguments))

    @classmethod
    def from_text(cls, name: str, arguments_json: str, call_id: str | None = None) -> ToolCall:
        """From the model's own text for the arguments; `arguments` is None when it does not parse."""
        return cls(
            id=call_id or new_call_id(), name=name, arguments_json=arguments_json, arguments=_parse_object(arguments_json)
        )

    @classmethod
    def from_openai(cls, call: Any, param: str = "tool_calls[0]") -> ToolCall:
        """Parse ``{"id", "type": "function", "function": {"name", "arguments": "<json>"}}``."""
        if not isinstance(call, Mapping):
            raise InvalidRequestError(f"{param} must be an object, got {_kind(call)}", param)
        if call.get("type", "function") != "function":
            raise InvalidRequestError(f"{param}.type must be 'function', got {call.get('type')!r}", f"{param}.type")
        fn = call.get("function")
        if not isinstance(fn, Mapping):
            raise InvalidRequestError(f"{param}.function must be an object, got {_kind(fn)}", f"{param}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequestError(f"{param}.function.name must be a non-empty string", f"{param}.function.name")
        raw = fn.get("arguments", "{}")
        if isinstance(raw, Mapping):  # lenient: some clients send the object itself
            arguments: dict[str, Any] | None = dict(raw)
            text = json.dumps(raw, ensure_ascii=False, separators=(",", ":"))
        elif isinstance(raw, str):
            text = raw
            arguments = _parse_object(raw) if raw.strip() else {}
            if arguments is None:
                raise InvalidRequestError(
                    f"{param}.function.arguments must be a JSON object encoded as a string, got {raw[:80]!r}",
                    f"{param}.function.arguments",
                )
        else:
            raise InvalidRequestError(
                f"{param}.function.arguments must be a string, got {_kind(raw)}", f"{param}.function.arguments"
            )
        call_id = call.get("id")
        if call_id is not None and not isinstance(call_id, str):
            raise InvalidRequestError(f"{param}.id must be a string, got {_kind(call_id)}", f"{param}.id")
        return cls(id=call_id or new_call_id(), name=name, arguments_json=text, arguments=arguments)

    def to_openai(self, index: int | None = None) -> dict[str, Any]:
        """The OpenAI ``tool_calls[]`` entry (``index`` is added for streaming chunks)."""
        out: dict[str, Any] = {}
        if index is not None:
            out["index"] = index
        out.update(id=self.id, type="function", function={"name": self.name, "arguments": self.arguments_json})
        return out


@dataclass(frozen=True)
class ToolChoice:
    """Normalised ``tool_choice``: "none", "auto", "required", or "named" with the tool's `name`."""

    mode: Literal["none", "auto", "required", "named"]
    name: str | None = None

    @property
    def forces_call(self) -> bool:
        return self.mode in ("required", "named")


def parse_tools(tools: Any, param: str = "tools") -> tuple[ToolDefinition, ...]:
    """Validate a request's ``tools`` list (None or empty: no tools). Duplicate names are refused."""
    if tools is None:
        return ()
    if not isinstance(tools, Sequence) or isinstance(tools, (str, bytes)):
        raise InvalidRequestError(f"{param} must be an array of tools, got {_kind(tools)}", param)
    out = tuple(ToolDefinition.from_openai(t, f"{param}[{i}]") for i, t in enumerate(tools))
    seen: set[str] = set()
    for i, t in enumerate(out):
        if t.name in seen:
            raise InvalidRequestError(
                f"{param}[{i}].function.name {t.name!r} is defined twice", f"{param}[{i}].function.name"
            )
        seen.add(t.name)
    return out


def parse_tool_choice(choice: Any, tools: Sequence[ToolDefinition], param: str = "tool_choice") -> ToolChoice:
    """Normalise ``tool_choice`` (None means "auto" with tools and "none" without, as OpenAI does)."""
    if choice is None:
        return ToolChoice("auto" if tools else "none")
    if isinstance(choice, ToolChoice):
        parsed = choice
    elif isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise InvalidRequestError(
                f"{param} must be 'none', 'auto', 'required' or {{'type': 'function', 'function': "
                f"{{'name': ...}}}}, got {choice!r}",
                param,
            )
        parsed = ToolChoice(choice)  # type: ignore[arg-type]
    elif isinstance(choice, Mapping):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, Mapping) else None
        if choice.get("type") != "function" or not isinstance(name, str):
            raise InvalidRequestError(
                f"{param} as an object must be {{'type': 'function', 'function': {{'name': ...}}}}", param
            )
        parsed = ToolChoice("named", name)
    else:
        raise InvalidRequestError(f"{param} must be a string or an object, got {_kind(choice)}", param)
    if parsed.mode in ("required", "named") and not tools:
        raise InvalidRequestError(f"{param} {parsed.mode!r} needs at least one tool in 'tools'", param)
    if parsed.mode == "named" and parsed.name not in {t.name for t in tools}:
        raise InvalidRequestError(
            f"{param} names function {parsed.name!r}, which is not in 'tools' "
            f"(defined: {', '.join(t.name for t in tools)})",
            f"{param}.function.name",
        )
    return parsed


def normalize_messages(messages: Any, param: str = "messages") -> list[dict[str, Any]]:
    """OpenAI chat messages -> plain dicts: ``role``, ``content`` (a string), and for assistant messages
    ``tool_calls`` with ``function.arguments`` parsed into objects, so no template double-encodes them.

    Content given as a list of parts is joined from its ``text`` parts (other part types are refused).
    """
    if not isinstance(messages, Sequence) or isinstance(messages, (str, bytes)) or not messages:
        raise InvalidRequestError(f"{param} must be a non-empty array of messages", param)
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"{param}[{i}]"
        if not isinstance(message, Mapping):
            raise InvalidRequestError(f"{where} must be an object, got {_kind(message)}", where)
        role = message.get("role")
        if role not in _ROLES:
            raise InvalidRequestError(f"{where}.role must be one of {', '.join(_ROLES)}, got {role!r}", f"{where}.role")
        item: dict[str, Any] = {"role": "system" if role == "developer" else role}
        calls = message.get("tool_calls") if role == "assistant" else None
        item["content"] = _content_text(message.get("content"), f"{where}.content", optional=bool(calls))
        if calls:
            if not isinstance(calls, Sequence) or isinstance(calls, (str, bytes)):
                raise InvalidRequestError(f"{where}.tool_calls must be an array", f"{where}.tool_calls")
            parsed = [ToolCall.from_openai(c, f"{where}.tool_calls[{j}]") for j, c in enumerate(calls)]
            item["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in parsed
            ]
        if role in ("tool", "ipython"):
            call_id = message.get("tool_call_id")
            if call_id is not None:
                item["tool_call_id"] = call_id
        if message.get("name") is not None:
            item["name"] = message["name"]
        out.append(item)
    return out


def _content_text(content: Any, param: str, optional: bool) -> str:
    if content is None:
        if optional:
            return ""
        raise InvalidRequestError(f"{param} is required", param)
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, bytes):
        parts: list[str] = []
        for j, part in enumerate(content):
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise InvalidRequestError(
                    f"{param}[{j}] must be a text part {{'type': 'text', 'text': ...}} (only text is supported)",
                    f"{param}[{j}]",
                )
            parts.append(part["text"])
        return "".join(parts)
    raise InvalidRequestError(f"{param} must be a string or an array of text parts, got {_kind(content)}", param)


def _parse_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
