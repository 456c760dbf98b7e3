"""The request body and the small typed readers every request validator uses.

:func:`parse_json_body` turns the raw body into a JSON object; the ``read_*`` functions fetch one field of a
decoded object, check its type and range, and raise :class:`~.errors.APIError` (400) whose ``param`` names
the field. Costs: ``parse_json_body`` is linear in the body size; every reader is O(1) (``short_repr`` cuts
what it echoes to 80 characters). Pure functions: safe from any thread.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from .errors import invalid

__all__ = [
    "read_stream",
    "check_unknown_fields",
    "is_int",
    "parse_json_body",
    "read_bool",
    "read_int",
    "read_number",
    "read_string",
    "short_repr",
    "type_name",
]


def parse_json_body(body: bytes) -> dict[str, Any]:
    """Decode a request body (strict UTF-8 JSON) into an object, or raise a 400 that says why."""
    if not body:
        raise invalid("The request body is empty; expected a JSON object.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise invalid(f"The request body must be a JSON object, got {type_name(data)}.")
    return data


def check_unknown_fields(obj: dict[str, Any], allowed: set[str], where: str = "") -> None:
    """Refuse the first key of ``obj`` not in ``allowed``, as OpenAI does (``param`` is ``where.key``)."""
    for key in obj:
        if key not in allowed:
            param = f"{where}.{key}" if where else key
            raise invalid(f"Unrecognized request argument supplied: {param}", param)


def read_string(obj: dict[str, Any], key: str, *, required: bool = False) -> str:
    """``obj[key]`` as a string; ``""`` when absent or null unless ``required``."""
    value = obj.get(key)
    if value is None:
        if required:
            raise invalid(f"Missing required parameter: '{key}'.", key)
        return ""
    if not isinstance(value, str):
        raise invalid(f"{key} must be a string, got {type_name(value)}.", key)
    return value


def read_bool(obj: dict[str, Any], key: str, *, default: Any, prefix: str = "") -> Any:
    """``obj[key]`` as a boolean; ``default`` when absent or null."""
    value = obj.get(key)
    param = f"{prefix}.{key}" if prefix else key
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"{param} must be a boolean, got {type_name(value)}.", param)
    return value


def read_int(obj: dict[str, Any], key: str, *, minimum: int | None = None, maximum: int | None = None) -> int | None:
    """``obj[key]`` as an integer within bounds (an integral float is accepted); None when absent or null."""
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not is_int(value):
        raise invalid(f"{key} must be an integer, got {short_repr(value)}.", key)
    if minimum is not None and value < minimum:
        raise invalid(f"{key} must be >= {minimum}, got {value}.", key)
    if maximum is not None and value > maximum:
        raise invalid(f"{key} must be <= {maximum}, got {value}.", key)
    return value


def read_number(obj: dict[str, Any], key: str, lo: float, hi: float, *, default: float,
                exclusive_min: bool = False) -> float:
    """``obj[key]`` as a finite number in ``[lo, hi]`` (``(lo, hi]`` if ``exclusive_min``); ``default`` when absent."""
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise invalid(f"{key} must be a number, got {short_repr(value)}.", key)
    if value < lo or value > hi or (exclusive_min and value == lo):
        bound = f"> {lo}" if exclusive_min else f">= {lo}"
        raise invalid(f"{key} must be {bound} and <= {hi}, got {value}.", key)
    return float(value)


def is_int(value: Any) -> bool:
    """Whether ``value`` is an int and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def read_stream(data: dict[str, Any], options_allowed: set[str]) -> tuple[bool, bool]:
    """``stream`` and ``stream_options.include_usage`` (options only with ``stream``; unknown option keys
    refused, except those in `options_allowed`, which are accepted and ignored)."""
    stream = read_bool(data, "stream", default=False)
    include_usage = False
    options = data.get("stream_options")
    if options is not None:
        if not stream:
            raise invalid("stream_options is only allowed when stream is true.", "stream_options")
        if not isinstance(options, dict):
            raise invalid(f"stream_options must be an object, got {type_name(options)}.", "stream_options")
        check_unknown_fields(options, {"include_usage", *options_allowed}, "stream_options")
        include_usage = read_bool(options, "include_usage", default=False, prefix="stream_options")
    return stream, include_usage


def type_name(value: Any) -> str:
    """The JSON type of ``value`` for an error message (``an object``, ``null``, ...)."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def short_repr(value: Any) -> str:
    """A value for an error message, cut short so a hostile 8 MB string is not echoed back."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

