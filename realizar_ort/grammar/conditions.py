"""``not`` and ``if``/``then``/``else`` rewritten into keywords the compiler enforces exactly.

- :func:`apply_not`: ``not`` of types (the remaining types), of ``const``/``enum`` (``NOT_VALUES``: the
  builders leave those values out), of required-name sets (``FORBID_COMBOS``), of ``{not: X}`` (``X``), and
  of property conditions (``properties``/``required``/``type: object``): by De Morgan, an ``anyOf`` of
  "not an object", "this required name is missing" and "this property is present and fails its schema"
  (the property's ``not`` is then applied in turn). Anything else is refused, naming ``not``.
- :func:`exclusive_alternatives`: ``oneOf`` whose branches may overlap as ``anyOf`` of "branch i and not
  every other branch it may overlap", when those negations are exact and the product stays small.
- :func:`apply_if`: ``(if and then) or (not if and else)``, as an ``anyOf`` under ``allOf``; refused,
  naming ``if``, when the condition cannot be negated exactly.

Both only rewrite schemas (dicts); nothing is built here. Cost: linear in the condition.
"""

from __future__ import annotations

from typing import Any

from .composition import ALL_TYPES, SchemaResolver, deref, disjoint, json_equal, type_set, value_type_ok
from .errors import GrammarError, UnsupportedSchemaError
from .keywords import FORBID_COMBOS, NOT_VALUES, assertive

__all__ = ["apply_if", "apply_not", "exclusive_alternatives", "required_combos"]

MAX_ONEOF_PRODUCT = 64  # alternatives a oneOf rewrite may multiply into (each negation is an anyOf)

_PROPERTY_CONDITION = frozenset({"properties", "required", "type"})


def apply_if(schema: dict, path: str) -> dict:
    """``schema`` with ``if``/``then``/``else`` replaced by an exact ``allOf: [{anyOf: [...]}]``."""
    cond = schema["if"]
    then = schema.get("then", True)
    other = schema.get("else", True)
    for key, sub in (("if", cond), ("then", then), ("else", other)):
        if not isinstance(sub, (dict, bool)):
            raise GrammarError(f"keyword {key!r} at {path} must be a schema (an object or a boolean)")
    rest = {k: v for k, v in schema.items() if k not in ("if", "then", "else")}
    if cond is True or cond is False:
        branch = then if cond is True else other
        return {**rest, "allOf": [*rest.get("allOf", []), branch]}
    try:
        _check_negatable(cond, f"{path}/if", 8)
    except UnsupportedSchemaError as exc:
        raise UnsupportedSchemaError("if", path, f"the condition cannot be negated exactly ({exc})") from None
    either = {"anyOf": [{"allOf": [cond, then]}, {"not": cond, "allOf": [other]}]}
    return {**rest, "allOf": [*rest.get("allOf", []), either]}


def exclusive_alternatives(alts: list[Any], comp: SchemaResolver, path: str) -> list[Any]:
    """``oneOf: alts`` as ``anyOf`` alternatives that cannot overlap; refused naming ``oneOf`` if not exact."""
    plain = [deref(a, comp, path) for a in alts]
    out = []
    for i, a in enumerate(alts):
        negations = []
        product = 1
        for j, b in enumerate(plain):
            if j == i or disjoint(plain[i], b, comp, path):
                continue
            if not isinstance(b, dict) and b is not True:
                raise UnsupportedSchemaError("oneOf", path, "alternatives may overlap; use anyOf")
            try:  # the nested `not`s it leads to are checked where they are built, in their context
                negated = apply_not({"not": b}, f"{path}/oneOf/{j}")
            except UnsupportedSchemaError:
                raise UnsupportedSchemaError("oneOf", path, "alternatives may overlap and one cannot be negated "
                                                            "exactly; use anyOf") from None
            product *= max(1, max((len(x["anyOf"]) for x in negated.get("allOf", []) if "anyOf" in x), default=1))
            negations.append({"not": b})
        if product > MAX_ONEOF_PRODUCT:
            raise UnsupportedSchemaError("oneOf", path, f"making the alternatives exclusive needs more than "
                                                        f"{MAX_ONEOF_PRODUCT} cases; use anyOf")
        out.append({"allOf": [a, *negations]} if negations else a)
    return out


def _check_negatable(cond: Any, path: str, depth: int) -> None:
    """Raise :class:`UnsupportedSchemaError` if ``not: cond`` (and every ``not`` it leads to) is refused."""
    todo = [apply_not({"not": cond}, path)]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if "not" in node and node is not todo and depth > 0:
                _check_negatable(node["not"], path, depth - 1)
            todo.extend(v for k, v in node.items() if k != "not")
        elif isinstance(node, list):
            todo.extend(node)


def apply_not(schema: dict, path: str) -> dict:
    """``not`` of types (the remaining types), of ``const``/``enum`` (``NOT_VALUES``), of required-name sets
    (``FORBID_COMBOS``), and ``not: {not: X}`` (``X``). Anything else is refused."""
    neg = schema["not"]
    rest = {k: v for k, v in schema.items() if k != "not"}
    if neg is False or neg == {}:
        return rest if neg is False else {**rest, "type": []}
    neg = assertive(neg) if isinstance(neg, dict) else neg
    if neg is True or neg == {}:
        return {**rest, "type": []}
    if not isinstance(neg, dict):
        raise GrammarError(f"keyword 'not' at {path} must be a schema (an object or a boolean)")
    if set(neg) == {"not"}:  # double negation
        return {**rest, "allOf": [*rest.get("allOf", []), neg["not"]]}
    if "enum" in neg and not isinstance(neg["enum"], list):
        raise GrammarError(f"keyword 'enum' at {path}/not must be an array")
    if set(neg) <= {"enum", "const", "type", "nullable"} and ("enum" in neg or "const" in neg):
        values = [neg["const"]] if "const" in neg else list(neg["enum"])  # not one of these values
        if "const" in neg and "enum" in neg:
            values = [v for v in values if any(json_equal(v, w) for w in neg["enum"])]
        if "type" in neg or "nullable" in neg:  # a value of another type already passes the `not`
            values = [v for v in values if value_type_ok(v, type_set(neg, path))]
        return {**rest, NOT_VALUES: [*rest.get(NOT_VALUES, []), *values]}
    if set(neg) == {"type", "required"} and neg["type"] in ("object", ["object"]):
        combos = required_combos({"required": neg["required"]})
        if combos is not None:  # a non-object passes; an object may not have all the names
            return {**rest, FORBID_COMBOS: [*rest.get(FORBID_COMBOS, []), *combos]}
    if set(neg) == {"type"}:
        banned = set(type_set(neg, f"{path}/not"))
        if "number" in banned:
            banned.add("integer")
        kept = [t for t in type_set(rest, path) if t not in banned]
        if "integer" in banned and "number" in kept:
            raise UnsupportedSchemaError("not", path, "'not: integer' of a number cannot be enforced")
        return {**rest, "type": kept}
    combos = required_combos(neg)
    if combos is not None:  # "not all of these present" (for any combo); a non-object always fails `required`
        kept = [t for t in type_set(rest, path) if t == "object"]
        return {**rest, "type": kept, FORBID_COMBOS: [*rest.get(FORBID_COMBOS, []), *combos]}
    alts = _property_condition_negated(neg)
    if alts is not None:
        return {**rest, "allOf": [*rest.get("allOf", []), {"anyOf": alts}]}
    raise UnsupportedSchemaError("not", path, "only 'not' of types or of required-property combinations is enforced")


def required_combos(neg: Any) -> list[list[str]] | None:
    """``neg`` as alternatives of required-name sets (``required``, ``anyOf``/``allOf`` of those), or None."""
    if not isinstance(neg, dict):
        return None
    neg = assertive(neg)
    if set(neg) == {"required"} and isinstance(neg["required"], list) and neg["required"] \
            and all(isinstance(n, str) for n in neg["required"]):
        return [list(neg["required"])]
    if set(neg) == {"anyOf"} and isinstance(neg["anyOf"], list):
        out = []
        for alt in neg["anyOf"]:
            sub = required_combos(alt)
            if sub is None:
                return None
            out += sub
        return out or None
    if set(neg) == {"allOf"} and isinstance(neg["allOf"], list):
        names: list[str] = []
        for alt in neg["allOf"]:
            sub = required_combos(alt)
            if sub is None or len(sub) != 1:
                return None
            names += sub[0]
        return [names] if names else None
    return None




def _property_condition_negated(neg: dict) -> list[dict] | None:
    """``not`` of ``{type: object?, required: [...], properties: {...}}`` as ``anyOf`` alternatives, or None."""
    neg = {k: v for k, v in neg.items() if k not in ("$defs", "definitions")
           and not (k == "additionalProperties" and (v is True or v == {}))}
    if not neg or set(neg) - _PROPERTY_CONDITION or "properties" not in neg and "required" not in neg:
        return None
    props, required, t = neg.get("properties", {}), neg.get("required", []), neg.get("type")
    if not isinstance(props, dict) or not isinstance(required, list) or t not in (None, "object", ["object"]):
        return None
    alts: list[dict] = []
    if t is not None:  # a non-object fails the condition's type, so it passes the `not`
        alts.append({"type": [x for x in ALL_TYPES if x not in ("object", "integer")]})
    for name in required:
        alts.append({"type": "object", "not": {"required": [name]}})
    for name, sub in props.items():
        if sub is True or sub == {}:
            continue
        alts.append({"type": "object", "required": [name], "properties": {name: {"not": sub}}})
    return alts
