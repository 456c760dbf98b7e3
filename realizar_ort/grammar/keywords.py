"""Which schema keywords constrain a value, and the shape each one must have.

JSON Schema (every draft) says a validator ignores keywords it does not know: they are annotations
(``title``, draft-4 ``id``, vendor ``x-*``, ``javaType``, ``markdownDescription``, ...). So the compiler
keeps only the keywords in ``KNOWN`` (:func:`assertive`) and ignores the rest. Of the known keywords,
those in ``REFUSED`` are assertions we cannot enforce: they are refused by name, never ignored.
:func:`check_shapes` turns a malformed keyword value (``"properties": []``, ``"pattern": 5``,
``"enum": "abc"``) into a :class:`GrammarError` naming it, before anything relies on its shape.

Cost: a dict comprehension per schema node; build time only.
"""

from __future__ import annotations

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
    if all(k in KNOWN for k in schema) and ("if" in schema or ("then" not in schema and "else" not in schema)):
        return schema
    out = {k: v for k, v in schema.items() if k in KNOWN}
    if "if" not in out:  # then/else without if: ignored, as the spec says
        out.pop("then", None)
        out.pop("else", None)
    return out


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0 or (
        isinstance(v, float) and v.is_integer() and v >= 0)


def check_shapes(schema: dict, path: str) -> None:
    """Raise :class:`GrammarError` naming the first keyword whose value has the wrong JSON type."""
    def bad(key: str, want: str) -> GrammarError:
        return GrammarError(f"keyword {key!r} at {path} must be {want}, got {type(schema[key]).__name__}")

    for key, v in schema.items():
        if key in ("properties", "patternProperties", "$defs", "definitions", "dependentRequired"):
            if not isinstance(v, dict):
                raise bad(key, "an object")
            if key != "dependentRequired" and not all(isinstance(s, _SCHEMA) for s in v.values()):
                raise GrammarError(f"every value of {key!r} at {path} must be a schema (object or boolean)")
        elif key in ("required",):
            if not isinstance(v, list) or not all(isinstance(n, str) for n in v):
                raise bad(key, "an array of strings")
        elif key in ("enum",):
            if not isinstance(v, list):
                raise bad(key, "an array")
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            if not isinstance(v, list) or not all(isinstance(s, _SCHEMA) for s in v):
                raise bad(key, "an array of schemas")
            if not v and key != "prefixItems":
                raise GrammarError(f"keyword {key!r} at {path} must not be empty")
        elif key in ("additionalProperties", "additionalItems", "not", "propertyNames"):
            if not isinstance(v, _SCHEMA):
                raise bad(key, "a schema (object or boolean)")
        elif key == "items":
            if not isinstance(v, _SCHEMA) and not (isinstance(v, list) and all(isinstance(s, _SCHEMA) for s in v)):
                raise bad(key, "a schema or an array of schemas")
        elif key in ("pattern", "format", "$ref"):
            if not isinstance(v, str):
                raise bad(key, "a string")
        elif key in ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties"):
            if not _count(v):
                raise bad(key, "a non-negative integer")
        elif key in ("minimum", "maximum", "multipleOf"):
            if not isinstance(v, _NUMBER) or isinstance(v, bool):
                raise bad(key, "a number")
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):
            if not isinstance(v, _NUMBER):
                raise bad(key, "a number (or a boolean in draft 4)")
        elif key == "type":
            if not isinstance(v, (str, list)) or isinstance(v, list) and not all(isinstance(t, str) for t in v):
                raise bad(key, "a string or an array of strings")
        elif key in ("nullable", "uniqueItems"):
            if not isinstance(v, bool):
                raise bad(key, "a boolean")
        elif key == "dependencies":
            if not isinstance(v, dict):
                raise bad(key, "an object")
