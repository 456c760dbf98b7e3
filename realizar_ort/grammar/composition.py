"""Schema composition: ``allOf`` as one intersected schema, ``oneOf`` disjointness, and type helpers.

- :func:`merge_schemas` intersects two schemas keyword by keyword (``allOf``, and the siblings of
  ``anyOf``/``oneOf``/``$ref``); a pair it cannot intersect exactly (two different ``pattern`` values, ...)
  is refused with :class:`UnsupportedSchemaError` naming ``allOf``.
- :func:`pairwise_disjoint` proves ``oneOf`` alternatives cannot both match (disjoint types, or a
  required property pinned to different ``const`` values); otherwise the compiler refuses ``oneOf``.
- Keywords that cannot constrain a value are dropped first (:func:`.keywords.assertive`); ``ANY_SCHEMA`` is generic JSON, written
  with the ``#any`` reference the compiler turns into a recursive rule.

The functions take a :class:`SchemaResolver` (the compiler) for ``$ref`` lookups and its deadline tick.
Cost: build time only, proportional to the schema's size.
"""

from __future__ import annotations

from typing import Any, Protocol

from .errors import GrammarError, UnsupportedSchemaError
from .keywords import FORBID_COMBOS, NOT_VALUES, assertive

__all__ = [
    "ALL_TYPES",
    "ANY_SCHEMA",
    "SchemaResolver",
    "deref",
    "disjoint",
    "json_equal",
    "merge_schemas",
    "pairwise_disjoint",
    "type_set",
    "value_type_ok",
]

ALL_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")

ANY_SCHEMA = {"anyOf": [
    {"type": "object", "additionalProperties": {"$ref": "#any"}},
    {"type": "array", "items": {"$ref": "#any"}},
    {"type": ["string", "number", "boolean", "null"]},
]}


class SchemaResolver(Protocol):
    """What composition needs from the compiler: ``$ref`` lookup and the deadline check."""

    strict: bool

    def tick(self) -> None: ...

    def resolve(self, ref: str, path: str) -> Any: ...


def type_set(schema: dict, path: str) -> list[str]:
    """The ``type`` list (plus ``nullable``); no ``type``: any type (``integer`` is inside ``number``)."""
    t = schema.get("type")
    if t is None:
        types = list(ALL_TYPES)
        types.remove("integer")
    else:
        types = [t] if isinstance(t, str) else list(t)
        for name in types:
            if name not in ALL_TYPES:
                raise GrammarError(f"unknown type {name!r} at {path}")
    if schema.get("nullable") is True and "null" not in types:
        types.append("null")
    return types


def value_type_ok(v: Any, types: list[str]) -> bool:
    """True if the JSON value ``v`` has one of ``types`` (``1.0`` counts as an integer)."""
    if v is None:
        return "null" in types
    if isinstance(v, bool):
        return "boolean" in types
    if isinstance(v, int):
        return "integer" in types or "number" in types
    if isinstance(v, float):
        return "number" in types or ("integer" in types and v.is_integer())
    if isinstance(v, str):
        return "string" in types
    if isinstance(v, list):
        return "array" in types
    return "object" in types


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: same type and value, except that ``1`` equals ``1.0`` (booleans are not numbers)."""
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


_MERGE_MIN = ("minLength", "minItems", "minimum", "exclusiveMinimum", "minProperties")
_MERGE_MAX = ("maxLength", "maxItems", "maximum", "exclusiveMaximum", "maxProperties")


def merge_schemas(a: Any, b: Any, path: str, comp: SchemaResolver) -> Any:
    """The intersection of two schemas as one schema, for ``allOf`` and siblings of ``anyOf``/``$ref``."""
    comp.tick()
    if a is True or a == {}:
        return b
    if b is True or b == {}:
        return a
    if a is False or b is False:
        return False
    for side in (a, b):
        if not isinstance(side, dict):
            raise GrammarError(f"schema at {path} must be an object or boolean")
    a, b = assertive(a), assertive(b)
    if not a or not b:
        return b if not a else a
    if "if" in a or "if" in b:
        from .conditions import apply_if  # conditions builds on this module

        a, b = (apply_if(x, path) if "if" in x else x for x in (a, b))
    if "$ref" in a and "$ref" not in b:
        a, b = b, a
    if "$ref" in b:
        rest = {k: v for k, v in b.items() if k != "$ref"}
        return merge_schemas(a, merge_schemas(comp.resolve(b["$ref"], path), rest, path, comp), path, comp)
    for side in (a, b):
        for key in ("anyOf", "oneOf"):
            if key in side:
                other = b if side is a else a
                rest = {k: v for k, v in side.items() if k != key}
                base = merge_schemas(rest, other, path, comp)
                if key == "oneOf":
                    return {"oneOf": [merge_schemas(base, alt, path, comp) for alt in side[key]]}
                return {"anyOf": [merge_schemas(base, alt, path, comp) for alt in side[key]]}
        if "allOf" in side:
            other = b if side is a else a
            merged = {k: v for k, v in side.items() if k != "allOf"}
            for sub in side["allOf"]:
                merged = merge_schemas(merged, sub, path, comp)
            return merge_schemas(merged, other, path, comp)
    out = dict(a)
    for key, v in b.items():
        if key not in out:
            out[key] = v
        elif out[key] == v or key in ("$id", "$defs", "definitions"):
            continue
        elif key in (FORBID_COMBOS, NOT_VALUES):
            out[key] = [*out[key], *v]
        elif key == "required":
            out[key] = list(dict.fromkeys([*out[key], *v]))
        elif key == "type":
            ta = {out[key]} if isinstance(out[key], str) else set(out[key])
            tb = {v} if isinstance(v, str) else set(v)
            both = ta & tb
            if "integer" in ta and "number" in tb or "number" in ta and "integer" in tb:
                both.add("integer")
            out[key] = sorted(both)
        elif key in _MERGE_MIN and not isinstance(v, bool):
            out[key] = max(out[key], v)
        elif key in _MERGE_MAX and not isinstance(v, bool):
            out[key] = min(out[key], v)
        elif key == "enum":
            out[key] = [x for x in out[key] if any(json_equal(x, y) for y in v)]
        elif key in ("properties", "additionalProperties", "prefixItems", "items", "additionalItems"):
            continue  # handled below
        else:
            raise UnsupportedSchemaError("allOf", path, f"cannot intersect two different {key!r}")
    if any(k in side for side in (a, b) for k in ("prefixItems", "items", "additionalItems")):
        # per position: a side's prefix schema, else its items schema (items never reach into the other side's
        # prefix positions, so the merged prefix takes both sides' schema for each position)
        pre_a, rest_a = _array_positions(a)
        pre_b, rest_b = _array_positions(b)
        n = max(len(pre_a), len(pre_b))
        for k in ("prefixItems", "items", "additionalItems"):
            out.pop(k, None)
        if n:
            out["prefixItems"] = [merge_schemas(pre_a[i] if i < len(pre_a) else rest_a,
                                                pre_b[i] if i < len(pre_b) else rest_b, f"{path}/prefixItems/{i}", comp)
                                  for i in range(n)]
        out["items"] = merge_schemas(rest_a, rest_b, f"{path}/items", comp)
    if "properties" in a or "properties" in b or "additionalProperties" in a or "additionalProperties" in b:
        pa, pb = a.get("properties", {}), b.get("properties", {})
        if not isinstance(pa, dict) or not isinstance(pb, dict):
            raise GrammarError(f"keyword 'properties' at {path} must be an object")
        xa = a.get("additionalProperties", False if comp.strict and pa else True)
        xb = b.get("additionalProperties", False if comp.strict and pb else True)
        props = {}
        # names in the order of the side that lists more of them (the object's own listing, usually: instances
        # follow it, and the grammar emits listed properties in order)
        for name in list(dict.fromkeys([*pa, *pb] if len(pa) >= len(pb) else [*pb, *pa])):
            sa = pa.get(name, xa)
            sb = pb.get(name, xb)
            props[name] = merge_schemas(sa, sb, f"{path}/properties/{name}", comp)
        out["properties"] = props
        out["additionalProperties"] = merge_schemas(xa, xb, f"{path}/additionalProperties", comp)
    return out


def _array_positions(schema: dict) -> tuple[list[Any], Any]:
    """(prefix schemas, schema of every later item), from 2020-12 or draft 4-7 keywords."""
    items = schema.get("items", True)
    if isinstance(items, list):
        return list(items), schema.get("additionalItems", True)
    return list(schema.get("prefixItems", [])), items


def deref(schema: Any, comp: SchemaResolver, path: str) -> Any:
    for _ in range(16):
        if not isinstance(schema, dict):
            return schema
        schema = assertive(schema)
        if set(schema) - {"$defs", "definitions"} != {"$ref"}:
            return schema
        schema = comp.resolve(schema["$ref"], path)
    return None


def _types_of(schema: Any) -> set[str] | None:
    """The JSON types ``schema`` can match (``integer`` counted as ``number``), or None when unknown."""
    if schema is False:
        return set()
    if not isinstance(schema, dict) or any(k in schema for k in ("$ref", "anyOf", "oneOf", "allOf", "not")):
        return None
    if "const" in schema:
        return {_value_kind(schema["const"])}
    if "enum" in schema and isinstance(schema["enum"], list):
        return {_value_kind(v) for v in schema["enum"]}
    if "type" in schema:
        types = {schema["type"]} if isinstance(schema["type"], str) else set(schema["type"])
        if schema.get("nullable") is True:
            types.add("null")
        return {"number" if t == "integer" else t for t in types}
    return None


def _values_of(schema: Any) -> list[Any] | None:
    if not isinstance(schema, dict) or any(k in schema for k in ("$ref", "anyOf", "oneOf", "allOf", "not")):
        return None
    if "const" in schema:
        return [schema["const"]]
    if "enum" in schema and isinstance(schema["enum"], list):
        return list(schema["enum"])
    return None


def _value_kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(v), "object")


def _may_have(schema: dict, name: str, strict: bool) -> bool:
    props = schema.get("properties", {})
    if isinstance(props, dict) and name in props:
        return props[name] is not False
    if schema.get("patternProperties"):
        return True
    extra = schema.get("additionalProperties", False if strict and props else True)
    return extra is not False


def disjoint(a: Any, b: Any, comp: SchemaResolver, path: str, depth: int = 0) -> bool:
    """True if no value can match both ``a`` and ``b`` (sufficient: False means 'maybe overlap')."""
    comp.tick()
    if depth > 6:
        return False
    a, b = deref(a, comp, path), deref(b, comp, path)
    if a is False or b is False:
        return True
    if not isinstance(a, dict) or not isinstance(b, dict):
        return False
    ta, tb = _types_of(a), _types_of(b)
    if ta is not None and tb is not None and not (ta & tb):
        return True
    va, vb = _values_of(a), _values_of(b)
    if va is not None and vb is not None and not any(json_equal(x, y) for x in va for y in vb):
        return True
    if va is not None and tb is not None and not any(_value_kind(x) in tb for x in va):
        return True
    if vb is not None and ta is not None and not any(_value_kind(x) in ta for x in vb):
        return True
    objects = (ta is None or ta <= {"object"}) and (tb is None or tb <= {"object"}) and (
        ta == {"object"} or tb == {"object"})
    if not objects:
        return False
    strict = getattr(comp, "strict", False)
    ra, rb = a.get("required", []), b.get("required", [])
    if any(isinstance(n, str) and not _may_have(b, n, strict) for n in ra if isinstance(ra, list)):
        return True
    if any(isinstance(n, str) and not _may_have(a, n, strict) for n in rb if isinstance(rb, list)):
        return True
    pa, pb = a.get("properties", {}), b.get("properties", {})
    if isinstance(ra, list) and isinstance(rb, list) and isinstance(pa, dict) and isinstance(pb, dict):
        for name in set(ra) & set(rb):
            if name in pa and name in pb and disjoint(pa[name], pb[name], comp, path, depth + 1):
                return True
    return False


def pairwise_disjoint(alts: list[Any], comp: SchemaResolver, path: str) -> bool:
    """True if no two alternatives can match one value (a sufficient check; False means 'maybe overlap')."""
    return all(disjoint(alts[i], alts[j], comp, path) for i in range(len(alts)) for j in range(i + 1, len(alts)))
