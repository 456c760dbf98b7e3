"""Which schema keywords constrain a value, and the shape each one must have.

JSON Schema (every draft) says a validator ignores keywords it does not know: they are annotations
(``title``, draft-4 ``id``, vendor ``x-*``, ``javaType``, ``markdownDescription``, ...). So the compiler
keeps only the keywords in ``KNOWN`` (:func:`assertive`) and ignores the rest. Of the known keywords,
those in ``REFUSED`` are assertions we cannot enforce: they are refused by name, never ignored.
:func:`check_shapes` turns a malformed keyword value (``"properties": []``, ``"pattern": 5``,
``"enum": "abc"``) into a :class:`GrammarError` naming it, before anything relies on its shape.

Cost: a dict comprehension and one table look-up per keyword per schema node; build time only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import GrammarError

__all__ = ["ENFORCED", "FORBID_COMBOS", "KNOWN", "NOT_VALUES", "REFUSED", "assertive", "check_shapes"]

# internal: ``not`` of required-name sets, as lists of names that may not all be present (set by the compiler)
FORBID_COMBOS = "\x00forbid-combos"
# internal: ``not`` of ``const``/``enum``, as the JSON values the instance may not equal (set by the compiler)
NOT_VALUES = "\x00not-values"

# keywords the compiler reads (some only in some forms: see the compiler's refusals)
ENFORCED = frozenset({
    "type", "properties", "required", "additionalProperties", "enum", "const", "anyOf", "oneOf", "allOf",
    "$ref", "$defs", "definitions", "items", "prefixItems", "additionalItems", "minItems", "maxItems",
    "minLength", "maxLength", "pattern", "format", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "nullable", "uniqueItems", "multipleOf", "$id",
    "minProperties", "maxProperties", "dependentRequired", "dependencies", "propertyNames",
    "patternProperties", "not", "if", "then", "else", FORBID_COMBOS, NOT_VALUES,
})
# assertions (and applicators) of some draft that we do not enforce: refused by name, never ignored
REFUSED = frozenset({
    "contains", "dependentSchemas", "unevaluatedProperties", "unevaluatedItems", "$dynamicRef",
    "$recursiveRef", "extends", "disallow", "divisibleBy",
})
KNOWN = ENFORCED | REFUSED

_SCHEMA = (dict, bool)
_NUMBER = (int, float)


def assertive(schema: dict) -> dict:
    """``schema`` without the keywords that cannot constrain a value (annotations, unknown keywords)."""
    if KNOWN.issuperset(schema) and ("if" in schema or ("then" not in schema and "else" not in schema)):
        return schema
    out = {k: v for k, v in schema.items() if k in KNOWN}
    if "if" not in out:  # then/else without if: ignored, as the spec says
        out.pop("then", None)
        out.pop("else", None)
    return out


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0 or (
        isinstance(v, float) and v.is_integer() and v >= 0)


def _is_list_of(kind: type | tuple[type, ...]) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, list) and all(isinstance(x, kind) for x in v)


# keyword -> (is its value well-shaped?, what it must be); checked in the schema's key order, first failure wins
_SHAPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    **dict.fromkeys(("properties", "patternProperties", "$defs", "definitions", "dependentRequired", "dependencies"),
                    (lambda v: isinstance(v, dict), "an object")),
    "required": (_is_list_of(str), "an array of strings"),
    "enum": (lambda v: isinstance(v, list), "an array"),
    **dict.fromkeys(("anyOf", "oneOf", "allOf", "prefixItems"), (_is_list_of(_SCHEMA), "an array of schemas")),
    **dict.fromkeys(("additionalProperties", "additionalItems", "not", "propertyNames"),
                    (lambda v: isinstance(v, _SCHEMA), "a schema (object or boolean)")),
    "items": (lambda v: isinstance(v, _SCHEMA) or _is_list_of(_SCHEMA)(v), "a schema or an array of schemas"),
    **dict.fromkeys(("pattern", "format", "$ref"), (lambda v: isinstance(v, str), "a string")),
    **dict.fromkeys(("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"),
                    (_count, "a non-negative integer")),
    **dict.fromkeys(("minimum", "maximum", "multipleOf"),
                    (lambda v: isinstance(v, _NUMBER) and not isinstance(v, bool), "a number")),
    **dict.fromkeys(("exclusiveMinimum", "exclusiveMaximum"),
                    (lambda v: isinstance(v, _NUMBER), "a number (or a boolean in draft 4)")),
    "type": (lambda v: isinstance(v, str) or isinstance(v, list) and all(isinstance(t, str) for t in v),
             "a string or an array of strings"),
    **dict.fromkeys(("nullable", "uniqueItems"), (lambda v: isinstance(v, bool), "a boolean")),
}
_OF_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions"})  # values must be schemas
_NON_EMPTY = frozenset({"anyOf", "oneOf", "allOf"})


def check_shapes(schema: dict, path: str) -> None:
    """Raise :class:`GrammarError` naming the first keyword whose value has the wrong JSON type."""
    for key, v in schema.items():
        shape = _SHAPES.get(key)
        if shape is None:
            continue
        if not shape[0](v):
            raise GrammarError(f"keyword {key!r} at {path} must be {shape[1]}, got {type(v).__name__}")
        if key in _OF_SCHEMAS and not all(isinstance(s, _SCHEMA) for s in v.values()):
            raise GrammarError(f"every value of {key!r} at {path} must be a schema (object or boolean)")
        if key in _NON_EMPTY and not v:
            raise GrammarError(f"keyword {key!r} at {path} must not be empty")
