"""A tool's ``parameters`` as the ``arguments`` of a call body: references kept pointing into the tool.

A call grammar nests each tool's parameters schema under the call body's arguments key, inside an
``anyOf`` over the tools (and, for parallel calls, an array). A local ``$ref`` such as ``#/$defs/User``
is written against the *tool's* ``parameters`` root (every Pydantic model with a nested model produces
one), so once nested it no longer resolves. :func:`scoped_arguments` moves the tool's schema under
``$defs["tool:<name>"]`` of the call schema and rewrites every local pointer in it (``#`` ->
``#/$defs/tool:<name>``, ``#/x/y`` -> ``#/$defs/tool:<name>/x/y``), so each tool keeps its own namespace:
two tools that both define ``$defs/User`` differently do not collide. A schema without references is
inlined unchanged.

A tool that takes no arguments (``parameters`` absent, ``{}``, or an object schema with no properties and
no ``additionalProperties``) takes exactly ``{}``: OpenAI's meaning, and the only reading under which a
model cannot fill the arguments with whatever it likes.

Pure functions over JSON values (walked iteratively: a hostile schema cannot exhaust the stack).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["NO_ARGUMENTS", "scoped_arguments", "scoped_schema", "takes_no_arguments"]

NO_ARGUMENTS: Mapping[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}

# Keywords whose values are JSON data, not schemas: a "$ref" string inside them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples", "example"})
# Keywords whose value maps names to schemas (a property may be called "default" or "$ref").
_NAME_MAPS = frozenset({"properties", "$defs", "definitions", "patternProperties", "dependentSchemas"})
# Keywords that may sit beside "no properties" without constraining the object.
_HARMLESS = frozenset({
    "type", "properties", "required", "title", "description", "$schema", "$id", "$comment", "$defs",
    "definitions", "examples", "default", "strict", "deprecated",
})


def takes_no_arguments(parameters: Mapping[str, Any]) -> bool:
    """Whether ``parameters`` describes a call without arguments (then exactly ``{}`` is allowed)."""
    if any(key not in _HARMLESS for key in parameters):
        return False
    if parameters.get("type", "object") != "object":
        return False
    return not parameters.get("properties") and not parameters.get("required")


def scoped_arguments(name: str, parameters: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The arguments schema to nest in a call body for tool ``name``, and the ``$defs`` entries the call
    schema's root must carry for it (empty when the schema has no local references)."""
    if takes_no_arguments(parameters):
        return dict(NO_ARGUMENTS), {}
    return scoped_schema(f"tool:{name}", parameters)


def scoped_schema(key: str, schema: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``schema`` relocated under ``#/$defs/<key>`` of an enclosing schema: ``({"$ref": ...}, {key: ...})``
    when it holds local references, else ``(schema, {})`` unchanged."""
    if not _has_local_ref(schema):
        return dict(schema), {}
    base = "#/$defs/" + key.replace("~", "~0").replace("/", "~1")
    moved = _rewrite_refs(schema, base)
    for root_only in ("$id", "$schema"):  # they belong to the tool's root, which is no longer the root
        moved.pop(root_only, None)
    return {"$ref": base}, {key: moved}


def _is_local(ref: Any) -> bool:
    return isinstance(ref, str) and (ref == "#" or ref.startswith("#/"))


def _has_local_ref(schema: Any) -> bool:
    stack: list[tuple[Any, bool]] = [(schema, False)]
    while stack:
        node, names = stack.pop()
        if isinstance(node, Mapping):
            for key, value in node.items():
                if not names and key == "$ref" and _is_local(value):
                    return True
                if names or key not in _DATA_KEYWORDS:
                    stack.append((value, not names and key in _NAME_MAPS))
        elif isinstance(node, list):
            stack.extend((v, False) for v in node)
    return False


def _rewrite_refs(schema: Mapping[str, Any], base: str) -> dict[str, Any]:
    """A copy of ``schema`` whose local ``$ref`` pointers are prefixed with ``base``."""
    root: dict[str, Any] = {}
    stack: list[tuple[Any, Any, bool]] = [(schema, root, False)]  # (source, copy, keys are names)
    while stack:
        source, target, names = stack.pop()
        keyword = isinstance(source, Mapping) and not names  # keys of this object are schema keywords
        for key, value in (source.items() if isinstance(source, Mapping) else enumerate(source)):
            if keyword and key == "$ref" and _is_local(value):
                out: Any = base + value[1:]
            elif keyword and key in _DATA_KEYWORDS:
                out = value
            elif isinstance(value, Mapping):
                out = {}
                stack.append((value, out, keyword and key in _NAME_MAPS))
            elif isinstance(value, list):
                out = [None] * len(value)
                stack.append((value, out, False))
            else:
                out = value
            target[key] = out
    return root
