"""The ``messages`` array of a chat-completions request, validated into OpenAI message dicts.

Roles are checked (``developer`` becomes ``system``), ``content`` is normalised to ``str | None`` (an array
of text parts is joined), and an assistant's past ``tool_calls`` are checked down to their JSON arguments.
Every error is an :class:`~.errors.APIError` (400) whose ``param`` names the field with its path
(``messages[2].content``). Costs: linear in the size of the messages. Pure functions: safe from any thread.
"""

from __future__ import annotations

from typing import Any

import orjson

from .errors import invalid
from .protocol_fields import check_unknown_fields, short_repr, type_name

__all__ = ["read_messages"]

_ROLES = ("system", "developer", "user", "assistant", "tool")


def read_messages(value: Any) -> tuple[dict[str, Any], ...]:
    """``messages``: a non-empty array of OpenAI messages, each checked and normalised."""
    if value is None:
        raise invalid("Missing required parameter: 'messages'.", "messages")
    if not isinstance(value, list):
        raise invalid(f"messages must be an array, got {type_name(value)}.", "messages")
    if not value:
        raise invalid("messages must contain at least one message.", "messages")
    return tuple(_message(m, f"messages[{i}]") for i, m in enumerate(value))


def _message(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"{where} must be an object, got {type_name(value)}.", where)
    role = value.get("role")
    if role not in _ROLES:
        raise invalid(f"{where}.role must be one of {list(_ROLES)}, got {short_repr(role)}.", f"{where}.role")
    allowed = {"role", "content", "name"}
    if role == "assistant":
        allowed |= {"tool_calls", "refusal"}
    if role == "tool":
        allowed |= {"tool_call_id"}
    check_unknown_fields(value, allowed, where)
    message: dict[str, Any] = {"role": "system" if role == "developer" else role}
    content = _content(value.get("content"), f"{where}.content")
    if "name" in value:
        name = value["name"]
        if not isinstance(name, str):
            raise invalid(f"{where}.name must be a string, got {type_name(name)}.", f"{where}.name")
        message["name"] = name
    if role == "assistant":
        calls = value.get("tool_calls")
        if calls is not None:
            message["tool_calls"] = _past_tool_calls(calls, f"{where}.tool_calls")
        if content is None and not message.get("tool_calls"):
            raise invalid(f"{where}: an assistant message needs content or tool_calls.", f"{where}.content")
    elif content is None:
        raise invalid(f"Missing required parameter: '{where}.content'.", f"{where}.content")
    if role == "tool":
        call_id = value.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise invalid(f"{where}.tool_call_id must be a non-empty string.", f"{where}.tool_call_id")
        message["tool_call_id"] = call_id
    message["content"] = content
    return message


def _content(value: Any, where: str) -> str | None:
    """``content`` as a string: a string, null, or an array of text parts (joined)."""
    if value is None or isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise invalid(f"{where} must be a string or an array of content parts, got {type_name(value)}.", where)
    texts = []
    for i, part in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(part, dict):
            raise invalid(f"{at} must be an object, got {type_name(part)}.", at)
        if part.get("type") != "text":
            raise invalid(f"{at}.type {short_repr(part.get('type'))} is not supported: this model takes text parts only.",
                          f"{at}.type")
        check_unknown_fields(part, {"type", "text"}, at)
        text = part.get("text")
        if not isinstance(text, str):
            raise invalid(f"{at}.text must be a string, got {type_name(text)}.", f"{at}.text")
        texts.append(text)
    return "".join(texts)


def _past_tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise invalid(f"{where} must be an array, got {type_name(value)}.", where)
    calls = []
    for i, call in enumerate(value):
        at = f"{where}[{i}]"
        if not isinstance(call, dict):
            raise invalid(f"{at} must be an object, got {type_name(call)}.", at)
        check_unknown_fields(call, {"id", "type", "function"}, at)
        if call.get("type", "function") != "function":
            raise invalid(f"{at}.type must be 'function', got {short_repr(call.get('type'))}.", f"{at}.type")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise invalid(f"{at}.id must be a non-empty string.", f"{at}.id")
        fn = call.get("function")
        if not isinstance(fn, dict):
            raise invalid(f"{at}.function must be an object, got {type_name(fn)}.", f"{at}.function")
        check_unknown_fields(fn, {"name", "arguments"}, f"{at}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise invalid(f"{at}.function.name must be a non-empty string.", f"{at}.function.name")
        arguments = fn.get("arguments")
        if not isinstance(arguments, str):
            raise invalid(f"{at}.function.arguments must be a JSON string, got {type_name(arguments)}.",
                          f"{at}.function.arguments")
        try:
            orjson.loads(arguments)
        except orjson.JSONDecodeError:
            raise invalid(f"{at}.function.arguments is not valid JSON.", f"{at}.function.arguments") from None
        calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
    return calls
