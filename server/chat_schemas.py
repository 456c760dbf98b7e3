"""The JSON Schemas a chat request carries: ``tools`` (with ``tool_choice``) and ``response_format``.

Each reader checks one field of a chat-completions body and raises :class:`~.errors.APIError` (400) whose
``param`` names the offending field with its path (``tools[0].function.parameters``). Costs: linear in the
field's size; a schema is walked once, iteratively, for its depth (a hostile schema cannot exhaust the
stack). Pure functions: safe from any thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .errors import invalid
from .protocol_fields import check_unknown_fields, short_repr, type_name

__all__ = [
    "MAX_SCHEMA_DEPTH",
    "MAX_TOOLS",
    "JsonSchemaFormat",
    "read_response_format",
    "read_tool_choice",
    "read_tools",
]

MAX_TOOLS = 128  # OpenAI's limit; the default of [server].max_tools
MAX_SCHEMA_BYTES = 256 * 1024  # the default of [server].max_schema_bytes (compact JSON of one schema)
MAX_SCHEMA_DEPTH = 32  # nesting of a JSON Schema (response_format / tool parameters)
_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True)
class JsonSchemaFormat:
    """``response_format``: ``json_object`` (schema None) or ``json_schema`` with its schema."""

    type: Literal["json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str | None = None
    strict: bool = False


def read_tools(value: Any, max_tools: int = MAX_TOOLS, max_schema_bytes: int = MAX_SCHEMA_BYTES,
               ) -> tuple[dict[str, Any], ...]:
    """``tools``: at most ``max_tools`` function definitions with unique names, kept as sent (the chat
    template lists them so)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid(f"tools must be an array, got {type_name(value)}.", "tools")
    if len(value) > max_tools:
        raise invalid(f"tools has {len(value)} entries; this server allows at most {max_tools}.", "tools",
                      "too_many_tools")
    tools = []
    names: set[str] = set()
    for i, tool in enumerate(value):
        at = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise invalid(f"{at} must be an object, got {type_name(tool)}.", at)
        check_unknown_fields(tool, {"type", "function"}, at)
        if tool.get("type") != "function":
            raise invalid(f"{at}.type must be 'function', got {short_repr(tool.get('type'))}.", f"{at}.type")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise invalid(f"{at}.function must be an object, got {type_name(fn)}.", f"{at}.function")
        check_unknown_fields(fn, {"name", "description", "parameters", "strict"}, f"{at}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise invalid(f"{at}.function.name must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-', "
                          f"got {short_repr(name)}.", f"{at}.function.name")
        if name in names:
            raise invalid(f"{at}.function.name {name!r} is defined twice.", f"{at}.function.name")
        names.add(name)
        description = fn.get("description")
        if description is not None and not isinstance(description, str):
            raise invalid(f"{at}.function.description must be a string.", f"{at}.function.description")
        parameters = fn.get("parameters", {"type": "object", "properties": {}})
        _schema(parameters, f"{at}.function.parameters", max_schema_bytes)
        strict = fn.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise invalid(f"{at}.function.strict must be a boolean.", f"{at}.function.strict")
        # kept as sent (unknown keys were refused above): the chat template lists tools as the client wrote them
        tools.append({"type": "function", "function": dict(fn)})
    return tuple(tools)


def read_tool_choice(value: Any, tools: tuple[dict[str, Any], ...]) -> str | dict[str, Any]:
    """``tool_choice``: ``"none"`` / ``"auto"`` / ``"required"`` or a named function that is in ``tools``."""
    if value is None:
        return "auto"
    if isinstance(value, str):
        if value not in ("none", "auto", "required"):
            raise invalid(f"tool_choice must be 'none', 'auto', 'required' or a named function, got {short_repr(value)}.",
                          "tool_choice")
        if value == "required" and not tools:
            raise invalid("tool_choice 'required' needs at least one tool in tools.", "tool_choice")
        return value
    if not isinstance(value, dict):
        raise invalid(f"tool_choice must be a string or an object, got {type_name(value)}.", "tool_choice")
    fn = value.get("function")
    if value.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise invalid("tool_choice object must be {\"type\": \"function\", \"function\": {\"name\": ...}}.",
                      "tool_choice")
    name = fn["name"]
    if name not in {t["function"]["name"] for t in tools}:
        raise invalid(f"tool_choice names function {name!r}, which is not in tools.", "tool_choice")
    return {"type": "function", "function": {"name": name}}


def read_response_format(value: Any, max_schema_bytes: int = MAX_SCHEMA_BYTES) -> JsonSchemaFormat | None:
    """``response_format``: None for text, else a :class:`JsonSchemaFormat`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(f"response_format must be an object, got {type_name(value)}.", "response_format")
    kind = value.get("type")
    if kind == "text":
        check_unknown_fields(value, {"type"}, "response_format")
        return None
    if kind == "json_object":
        check_unknown_fields(value, {"type"}, "response_format")
        return JsonSchemaFormat("json_object")
    if kind != "json_schema":
        raise invalid(f"response_format.type must be 'text', 'json_object' or 'json_schema', got {short_repr(kind)}.",
                      "response_format.type")
    check_unknown_fields(value, {"type", "json_schema"}, "response_format")
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise invalid("response_format.json_schema must be an object with 'name' and 'schema'.",
                      "response_format.json_schema")
    check_unknown_fields(spec, {"name", "description", "schema", "strict"}, "response_format.json_schema")
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise invalid("response_format.json_schema.name must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-'.",
                      "response_format.json_schema.name")
    schema = spec.get("schema", {})
    _schema(schema, "response_format.json_schema.schema", max_schema_bytes)
    strict = spec.get("strict", False)
    if not isinstance(strict, bool):
        raise invalid("response_format.json_schema.strict must be a boolean.", "response_format.json_schema.strict")
    return JsonSchemaFormat("json_schema", schema=schema, name=name, strict=strict)


def _schema(value: Any, where: str, max_bytes: int) -> None:
    if not isinstance(value, dict):
        raise invalid(f"{where} must be a JSON Schema object, got {type_name(value)}.", where)
    depth = _depth(value)
    if depth > MAX_SCHEMA_DEPTH:
        raise invalid(f"{where} is nested {depth} levels deep; at most {MAX_SCHEMA_DEPTH} are supported.", where)
    size = len(orjson.dumps(value))  # the depth check above keeps this within orjson's recursion limit
    if size > max_bytes:
        raise invalid(f"{where} is {size} bytes of JSON; this server allows at most {max_bytes} per schema.",
                      where, "schema_too_large")


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, iteratively (a hostile schema cannot exhaust the stack)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            deepest = max(deepest, depth)
            stack.extend((v, depth + 1) for v in node)
    return deepest

