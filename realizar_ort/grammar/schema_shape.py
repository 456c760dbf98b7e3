"""The shape check run before compiling a JSON Schema: every keyword the compiler reads holds a value of
the type the JSON Schema meta-schema gives it (``properties`` an object of schemas, ``required`` an array
of strings, ``minLength`` a non-negative integer...). A schema that fails it gets a :class:`GrammarError`
naming the keyword and its JSON pointer, instead of a ``TypeError`` from deep inside the compiler.

Walks the schema iteratively (a hostile schema cannot exhaust the stack); linear in its size. Keywords it
does not know are left alone (annotations and unknown keywords are ignored, as the compiler does).
"""

from __future__ import annotations

from typing import Any

from .errors import GrammarError

__all__ = ["check_schema_shape"]

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMAS = ("additionalProperties", "not", "contains", "propertyNames", "if", "then", "else",
            "unevaluatedProperties", "unevaluatedItems", "additionalItems")
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
_COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties", "minContains",
           "maxContains")
_NUMBERS = ("minimum", "maximum", "multipleOf")
_STRINGS = ("pattern", "format", "$ref")


def _is_number(value: Any, allow_bool: bool = False) -> bool:
    return (allow_bool or not isinstance(value, bool)) and isinstance(value, (int, float))


def check_schema_shape(schema: Any) -> None:
    """Raise :class:`GrammarError` at the first keyword whose value has the wrong type."""
    stack: list[tuple[Any, str]] = [(schema, "#")]
    while stack:
        node, at = stack.pop()
        if isinstance(node, bool):
            continue
        if not isinstance(node, dict):
            raise GrammarError(f"the schema at {at} must be an object or a boolean, got {type(node).__name__}")
        for key, value in node.items():
            where = f"{at}/{key}"

            def bad(expected: str, key: str = key, where: str = where, value: Any = value) -> GrammarError:
                return GrammarError(f"JSON Schema keyword {key!r} at {where} must be {expected}, "
                                    f"got {type(value).__name__}")

            if key in _SCHEMA_MAPS:
                if not isinstance(value, dict):
                    raise bad("an object of schemas")
                stack.extend((sub, f"{where}/{name}") for name, sub in value.items())
            elif key in _SCHEMAS:
                stack.append((value, where))
            elif key == "items":
                if isinstance(value, list):  # draft 4-7 tuple form
                    stack.extend((sub, f"{where}/{i}") for i, sub in enumerate(value))
                else:
                    stack.append((value, where))
            elif key in _SCHEMA_LISTS:
                if not isinstance(value, list):
                    raise bad("an array of schemas")
                stack.extend((sub, f"{where}/{i}") for i, sub in enumerate(value))
            elif key == "required":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise bad("an array of strings")
            elif key == "enum":
                if not isinstance(value, list):
                    raise bad("an array")
            elif key == "type":
                if not isinstance(value, str) and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                    raise bad("a string or an array of strings")
            elif key in _COUNTS:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise bad("a non-negative integer")
            elif key in _NUMBERS:
                if not _is_number(value):
                    raise bad("a number")
            elif key in ("exclusiveMinimum", "exclusiveMaximum"):
                if not _is_number(value, allow_bool=True):  # a boolean in draft 4
                    raise bad("a number")
            elif key in _STRINGS:
                if not isinstance(value, str):
                    raise bad("a string")
