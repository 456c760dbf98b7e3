"""Embedded ``$id`` resources and ``$anchor`` names -> plain local JSON pointers, before compilation.

A nested ``$id`` starts a new base URI: ``"#/$defs/x"`` inside it means that sub-resource's ``$defs``, and
``"other.json#/..."`` may name another embedded resource by its (relative) URI. :func:`localize_refs`
returns a copy of the schema where every ``$ref`` that names an embedded resource (or an anchor in one) is a
pointer from the document root (``"#/$defs/a/$defs/x"``), and ``$id``/``$anchor`` are dropped, so the
compiler only ever resolves root pointers. A reference to a document that is not embedded is left as is
(the compiler refuses it, naming ``$ref``). Only ``$id`` (draft 6 and later) starts a resource; draft-4
``id`` stays an annotation, as before.

Cost: two walks of the schema, only when it holds an ``$id`` or an ``$anchor``; the second copies only the
parts with an ``$id``, ``$anchor`` or ``$ref`` in them (the rest is shared with the input).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

__all__ = ["localize_refs"]

_ROOT = "urn:realizar-ort:root"  # base URI of a root without an absolute $id
_DATA = ("enum", "const", "examples", "default")  # values, not schemas: never walked


def _join(base: str, ref: str) -> str:
    if ref.startswith("#"):
        return base.split("#", 1)[0] + ref
    if base.startswith("urn:"):
        return ref if ":" in ref.split("/", 1)[0] else _ROOT + "/" + ref.lstrip("/")
    try:
        return urllib.parse.urljoin(base, ref)
    except ValueError:  # not a URI (e.g. "http://[::1"): it names no embedded resource
        return ref


def _segment(key: str) -> str:
    return urllib.parse.quote(key.replace("~", "~0").replace("/", "~1"), safe="~!$&'()*+,;=:@")


def _pointer(at: tuple | None) -> str:
    """The JSON pointer text (``""`` for the root) of a location from :func:`localize_refs`'s scan."""
    parts = []
    while at is not None:
        at, key, index = at
        parts.append(str(key) if index else _segment(key))
    return "".join("/" + p for p in reversed(parts))


def localize_refs(schema: Any) -> Any:
    """``schema`` with references into embedded resources rewritten as root pointers (see the module)."""
    if not isinstance(schema, dict) or not _needs_work(schema):
        return schema
    resources: dict[str, str] = {}
    anchors: dict[str, str] = {}

    dirty: set[int] = set()  # ids of the containers with an $id, $anchor or $ref at or below them

    def scan(node: Any, at: tuple | None, base: str) -> bool:
        # ``at``: where ``node`` is, as (parent's ``at``, key or index, is an index); the pointer text is only
        # spelled out for the few nodes that hold an ``$id`` or an ``$anchor`` (quoting every key of a large
        # schema was most of its compile). Returns whether the rewrite has anything to change in ``node``.
        found = False
        if isinstance(node, dict):
            sid = node.get("$id")
            if isinstance(sid, str):
                found = True
                if sid.startswith("#") and len(sid) > 1 and not sid.startswith("#/"):  # draft 6/7 plain name
                    anchors[_join(base, sid)] = _pointer(at)
                else:
                    base = _join(base, sid).split("#", 1)[0]
                    if base not in resources:
                        resources[base] = _pointer(at)
            if isinstance(node.get("$anchor"), str):
                found = True
                anchors[base.split("#", 1)[0] + "#" + node["$anchor"]] = _pointer(at)
            if isinstance(node.get("$ref"), str):
                found = True
            for k, v in node.items():
                if k not in _DATA and isinstance(v, (dict, list)) and scan(v, (at, k, False), base):
                    found = True
        elif isinstance(node, list):
            for i, v in enumerate(node):
                if isinstance(v, (dict, list)) and scan(v, (at, i, True), base):
                    found = True
        if found:
            dirty.add(id(node))
        return found

    root_id = schema.get("$id")
    root_base = _join(_ROOT, root_id).split("#", 1)[0] if isinstance(root_id, str) else _ROOT
    resources[root_base] = ""
    scan(schema, None, root_base)

    def rewrite(node: Any, base: str) -> Any:
        if id(node) not in dirty:  # nothing to change at or below it: shared, not copied
            return node
        if isinstance(node, dict):
            sid = node.get("$id")
            if isinstance(sid, str) and not (sid.startswith("#") and not sid.startswith("#/")):
                base = _join(base, sid).split("#", 1)[0]
            out = {}
            for k, v in node.items():
                if k in ("$id", "$anchor") and isinstance(v, str):
                    continue
                if k == "$ref" and isinstance(v, str):
                    out[k] = _local(_join(base, v), resources, anchors, v)
                elif k in _DATA:
                    out[k] = v
                else:
                    out[k] = rewrite(v, base)
            return out
        if isinstance(node, list):
            return [rewrite(v, base) for v in node]
        return node

    return rewrite(schema, root_base)


def _local(target: str, resources: dict[str, str], anchors: dict[str, str], original: str) -> str:
    doc, _, frag = target.partition("#")
    frag = urllib.parse.unquote(frag)
    if doc not in resources:
        return original
    if frag == "" or frag.startswith("/"):
        return "#" + resources[doc] + (urllib.parse.quote(frag, safe="~/!$&'()*+,;=:@") if frag else "")
    ptr = anchors.get(doc + "#" + frag)
    return original if ptr is None else "#" + ptr


def _needs_work(node: Any) -> bool:
    """Does the schema hold an ``$id`` or an ``$anchor`` anywhere (outside values)?"""
    todo = [node]
    while todo:
        n = todo.pop()
        if isinstance(n, dict):
            if "$anchor" in n or "$id" in n:
                return True
            todo.extend(v for k, v in n.items() if k not in _DATA)
        elif isinstance(n, list):
            todo.extend(n)
    return False
