"""Object keywords -> one plan the compiler builds: listed properties in order, required names, extra keys.

The grammar emits the listed ``properties`` in schema order (each may be skipped unless required), then
any extra keys, each with the value schema of ``additionalProperties``. So the model is steered to the
listed keys first, and extra keys are allowed exactly when the schema allows them:

- ``additionalProperties`` absent means allowed (the spec's default); with ``strict`` (OpenAI's strict mode)
  it means ``false`` whenever ``properties`` is given, as before.
- ``required`` names missing from ``properties`` become listed properties with the extra-key schema.
- ``patternProperties``: an extra key's value must satisfy ``additionalProperties`` and every pattern's
  schema (an intersection: sound whichever pattern the key matches); a listed name that matches a
  pattern gets that schema intersected too.
- ``propertyNames``: listed names are checked against it; extra keys are then not allowed.
- ``dependentRequired`` / ``dependencies`` (array form): a required trigger makes its dependents
  required; an optional trigger whose dependents are not all required may not appear.
- ``minProperties`` / ``maxProperties``: enforced when the plan's counts decide them, and
  ``minProperties: 1`` always (the closing brace only after a first key); else refused.

Every restriction here only drops valid instances, never admits an invalid one. Cost: build time only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import UnsupportedSchemaError
from .keywords import FORBID_COMBOS, assertive

__all__ = ["ObjectPlan", "object_plan"]


@dataclass
class ObjectPlan:
    props: dict[str, Any]  # listed name -> schema (False: may not appear)
    required: list[str]
    extra: Any  # schema of extra keys' values, or False
    empty: bool = False  # no object satisfies the schema
    nonempty: bool = False  # ``minProperties: 1`` beyond the required names: ``{}`` is not allowed


def _trivial(schema: Any) -> bool:
    return schema is True or (isinstance(schema, dict) and not assertive(schema))


def _name_ok(name: str, names: Any, path: str) -> bool:
    """Does ``name`` satisfy the ``propertyNames`` schema ``names``? (a subset of string keywords)."""
    if names is False:
        return False
    if _trivial(names):
        return True
    names = assertive(names)
    for key, v in names.items():
        if key == "type" and v == "string":
            continue
        if key == "pattern":
            try:
                if re.search(v, name) is None:
                    return False
            except re.error as exc:
                raise UnsupportedSchemaError("propertyNames", path, f"pattern {v!r}: {exc}") from exc
        elif key == "minLength" and len(name) < v or key == "maxLength" and len(name) > v:
            return False
        elif key == "enum" and name not in v or key == "const" and name != v:
            return False
        elif key not in ("minLength", "maxLength", "enum", "const"):
            raise UnsupportedSchemaError("propertyNames", path, f"only type/pattern/length/enum/const are enforced, "
                                                                f"not {key!r}")
    return True


def object_plan(schema: dict, path: str, strict: bool, merge) -> ObjectPlan:
    """The plan for an object schema; ``merge(a, b, path)`` intersects two schemas (the compiler's)."""
    props: dict[str, Any] = dict(schema.get("properties", {}))
    required = list(dict.fromkeys(schema.get("required", [])))
    default_extra = False if strict and props else True
    extra = schema.get("additionalProperties", default_extra)
    patterns: dict[str, Any] = schema.get("patternProperties", {})
    nontrivial = {p: s for p, s in patterns.items() if not _trivial(s)}
    for p, sub in nontrivial.items():
        try:
            rx = re.compile(p)
        except re.error as exc:
            raise UnsupportedSchemaError("patternProperties", path, f"pattern {p!r}: {exc}") from exc
        for name in props:
            if rx.search(name) is not None:
                props[name] = merge(props[name], sub, f"{path}/patternProperties")
        if extra is not False:
            extra = merge(extra, sub, f"{path}/patternProperties")
    names = schema.get("propertyNames", True)
    if not _trivial(names):
        for name in list(props):
            if not _name_ok(name, names, path):
                props[name] = False
        for name in required:
            if name not in props and not _name_ok(name, names, path):
                return ObjectPlan({}, [], False, empty=True)
        extra = False
    for name in required:
        if name not in props:
            if extra is False:
                return ObjectPlan({}, [], False, empty=True)
            props[name] = extra
    deps = dict(schema.get("dependentRequired", {}))
    for trigger, dep in schema.get("dependencies", {}).items():
        if isinstance(dep, list):
            deps[trigger] = dep
        elif not _trivial(dep):
            raise UnsupportedSchemaError("dependencies", path, "the schema form of dependencies is not enforced")
    changed = True
    while changed:  # required triggers make their dependents required (to a fixed point)
        changed = False
        for trigger, dep in deps.items():
            if not isinstance(dep, list) or not all(isinstance(d, str) for d in dep):
                raise UnsupportedSchemaError("dependentRequired", path, "dependents must be an array of strings")
            if trigger in required:
                for d in dep:
                    if d not in required:
                        required.append(d)
                        changed = True
                        if d not in props:
                            if extra is False:
                                return ObjectPlan({}, [], False, empty=True)
                            props[d] = extra
    for trigger, dep in deps.items():
        if trigger not in required and not all(d in required for d in dep):
            props[trigger] = False  # may not appear (and is kept out of the extra keys)
    for combo in schema.get(FORBID_COMBOS, []):  # `not: {required: combo}`: one of them must stay out
        if any(props.get(n, extra if n not in props else None) is False for n in combo):
            continue  # already cannot all appear
        optional = [n for n in combo if n not in required]
        if not optional:
            return ObjectPlan({}, [], False, empty=True)
        props[optional[-1]] = False  # a sound restriction: leave out the last optional one
    if any(props.get(r) is False for r in required):
        return ObjectPlan({}, [], False, empty=True)
    lo = schema.get("minProperties", 0)
    hi = schema.get("maxProperties")
    nonempty = lo == 1 and not required
    if nonempty and extra is False and not any(v is not False for v in props.values()):
        return ObjectPlan({}, [], False, empty=True)
    if lo > len(required) and not nonempty:
        raise UnsupportedSchemaError("minProperties", path, f"minProperties {lo} is above the {len(required)} "
                                                            "required properties")
    if hi is not None:
        possible = sum(1 for s in props.values() if s is not False)
        if len(required) > hi:
            return ObjectPlan({}, [], False, empty=True)
        if extra is not False or possible > hi:
            if len(required) == hi:
                props = {k: (v if k in required else False) for k, v in props.items()}
                extra = False
            else:
                raise UnsupportedSchemaError("maxProperties", path, f"maxProperties {hi} with up to "
                                                                    f"{'any number of' if extra is not False else possible} properties")
    return ObjectPlan(props, required, extra, nonempty=nonempty)
