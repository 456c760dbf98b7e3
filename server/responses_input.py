"""The ``input`` (and ``instructions``) of a Responses request, turned into the chat messages the engine runs.

``input`` is a string (one user message) or a list of items: messages (``role`` user / system /
developer / assistant; content a string or ``input_text`` / ``output_text`` parts), ``function_call``
items (a past call of the model: merged into one assistant message with ``tool_calls``, as chat holds
them) and ``function_call_output`` items (a ``tool`` message). ``reasoning`` items are skipped (this
server's models produce none). ``instructions`` become the first system message. Anything else (images,
files, ``item_reference``, hosted-tool calls) is refused with a 400 naming the item.

The messages come out in the normalised form :func:`~.chat_messages.read_messages` produces (string
content, ``developer`` as ``system``, arguments checked as JSON), so the rest of the path is chat's.
Pure functions; costs linear in the input's size.
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import invalid
from .protocol_fields import short_repr, type_name

__all__ = ["read_input"]

_MESSAGE_ROLES = ("user", "system", "developer", "assistant")
_TEXT_PARTS = ("input_text", "output_text", "text")


def read_input(value: Any, instructions: str | None) -> tuple[dict[str, Any], ...]:
    """Chat messages for ``input`` with ``instructions`` first (as a system message)."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
    elif isinstance(value, list):
        if not value:
            raise invalid("input must not be empty.", "input")
        for i, item in enumerate(value):
            _item(messages, item, f"input[{i}]")
    elif value is None:
        raise invalid("Missing required parameter: 'input'.", "input")
    else:
        raise invalid(f"input must be a string or an array of items, got {type_name(value)}.", "input")
    if not any(m["role"] != "system" for m in messages):
        raise invalid("input must hold at least one message that is not a system message.", "input")
    return tuple(messages)


def _item(messages: list[dict[str, Any]], item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise invalid(f"{where} must be an object, got {type_name(item)}.", where)
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        if role not in _MESSAGE_ROLES:
            raise invalid(f"{where}.role must be one of {list(_MESSAGE_ROLES)}, got {short_repr(role)}.",
                          f"{where}.role")
        messages.append({"role": "system" if role == "developer" else role,
                         "content": _content(item.get("content"), f"{where}.content")})
    elif kind == "function_call":
        call = {"id": _string(item, "call_id", where), "type": "function",
                "function": {"name": _string(item, "name", where), "arguments": _arguments(item, where)}}
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":  # calls of one turn share its message
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        text = output if isinstance(output, str) else _content(output, f"{where}.output")
        messages.append({"role": "tool", "tool_call_id": _string(item, "call_id", where), "content": text})
    elif kind == "reasoning":
        return  # this server's models do not reason in separate items; nothing to replay
    elif kind == "item_reference":
        raise invalid(f"{where}: item_reference needs stored responses; this server is stateless (send the "
                      "items themselves).", f"{where}.type")
    else:
        raise invalid(f"{where}.type {short_repr(kind)} is not supported: send messages, function_call and "
                      "function_call_output items.", f"{where}.type")


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise invalid(f"{where} must be a string or an array of content parts, got {type_name(value)}.", where)
    texts = []
    for i, part in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(part, dict):
            raise invalid(f"{at} must be an object, got {type_name(part)}.", at)
        if part.get("type") not in _TEXT_PARTS:
            raise invalid(f"{at}.type {short_repr(part.get('type'))} is not supported: this model takes text "
                          "parts only (input_text, output_text).", f"{at}.type")
        text = part.get("text")
        if not isinstance(text, str):
            raise invalid(f"{at}.text must be a string, got {type_name(text)}.", f"{at}.text")
        texts.append(text)
    return "".join(texts)


def _string(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise invalid(f"{where}.{key} must be a non-empty string.", f"{where}.{key}")
    return value


def _arguments(item: dict[str, Any], where: str) -> str:
    arguments = item.get("arguments")
    if not isinstance(arguments, str):
        raise invalid(f"{where}.arguments must be a JSON string, got {type_name(arguments)}.", f"{where}.arguments")
    try:
        orjson.loads(arguments)
    except orjson.JSONDecodeError:
        raise invalid(f"{where}.arguments is not valid JSON.", f"{where}.arguments") from None
    return arguments
