"""The schema walk: JSON Schema keywords -> NFA fragments, ``$ref``/``$defs`` as rules, then one DFA.

Every schema node becomes an NFA fragment over bytes (Thompson construction). Sub-schemas are inlined,
so ``anyOf`` alternatives are merged by determinisation; only a *recursive* ``$ref`` (one already being
inlined, e.g. a tree, or the nesting of generic JSON) becomes a **call** to a separate rule. Objects,
arrays, strings and literals are built here; numbers in :mod:`.schema_numbers`, string contents in
:mod:`.schema_strings`, ``pattern``/``format`` in :mod:`.schema_regex`, ``allOf``/``oneOf`` logic in
:mod:`.schema_composition`, ``not``/``if``/overlapping ``oneOf`` rewriting in :mod:`.conditions`, ``$id``
resources in :mod:`.refs`; :func:`.schema_automaton.determinise` turns the rules into one table. Every free
value inside a container calls one shared ``#any`` rule (not a copy per use).

Annotations and unknown keywords are ignored (:mod:`.keywords`). Refuse, never ignore: an assertion keyword
in ``keywords.REFUSED``, or one we cannot enforce in context, raises
:class:`UnsupportedSchemaError` naming it. Compilation has a state budget and a deadline
(:class:`GrammarTooLargeError`). Cost: the walk is Python (most of a compile: p50 ~1 ms, p99 ~0.06 s on
MaskBench, see bench/compile_time.py), determinisation numba; one compiler per call, and the only state
shared between calls is per-process tables of schema-independent NFA pieces (key-trie and character-class
templates in :mod:`.strings` / :mod:`.regex`, read-only once built), so concurrent calls are safe.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

from .automaton import CLOSE, RESET, UNBOUNDED, Automaton, Nfa, determinise
from .composition import (
    ANY_SCHEMA,
    json_equal,
    merge_schemas,
    pairwise_disjoint,
    type_set,
    value_type_ok,
)
from .conditions import apply_if, apply_not, exclusive_alternatives
from .errors import GrammarError, GrammarTooLargeError, UnsupportedSchemaError
from .keywords import KNOWN, NOT_VALUES, REFUSED, assertive, check_shapes
from .numbers import integer_except, number_frag
from .objects import object_plan
from .refs import localize_refs
from .regex import FORMAT_PATTERNS, STANDARD_FORMATS, regex_body
from .strings import free_string_body, json_text, property_key_frag

__all__ = ["MAX_ITEM_POSITIONS", "SUPPORTED", "compile_schema_automaton"]

MAX_ITEM_POSITIONS = 128
MAX_UNIQUE_VALUES = 6  # uniqueItems over an enum: 2^k item-set states

SUPPORTED = KNOWN - REFUSED  # the keywords the walk reads; anything outside KNOWN is an annotation
_ANY_KEYS = frozenset({"$defs", "definitions", "uniqueItems"})  # a schema with only these: any JSON value


class _Compiler:
    """One compilation: the NFA, the rule table (ref key -> index) and the deadline. Single use."""

    def __init__(self, root: Any, whitespace: int, max_states: int, deadline_s: float, strict: bool,
                 shared: frozenset[str] = frozenset(), deadline: float | None = None) -> None:
        self.root = root
        self.strict = strict
        self.shared = shared  # non-recursive $ref targets compiled once, as a rule, instead of inlined
        self.ws = whitespace
        self.nfa = Nfa(max_states)
        self.deadline = time.perf_counter() + deadline_s if deadline is None else deadline
        self.deadline_s = deadline_s
        self.rules: dict[str, int] = {}  # ref key -> rule index
        self.rule_keys: list[str] = []
        self.rule_frags: list[tuple[int, int]] = []
        self.counter_ticks = 0
        self.synthetic: dict[str, Any] = {}  # rule key -> schema, for rules that are not a JSON pointer
        self.nest = 0  # objects/arrays being built around the current schema (its rule's own nesting)

    # -- plumbing
    def tick(self) -> None:
        self.counter_ticks += 1
        if self.counter_ticks % 64 == 0 and time.perf_counter() > self.deadline:
            raise GrammarTooLargeError(f"schema compilation exceeded {self.deadline_s:.1f} s")

    def resolve(self, ref: str, path: str) -> Any:
        if ref == "#any":
            return ANY_SCHEMA
        if ref in self.synthetic:
            return self.synthetic[ref]
        if ref != "#" and not ref.startswith("#/"):
            raise UnsupportedSchemaError(
                "$ref", path, f"only local JSON-pointer references ('#' or '#/...') are supported, got {ref!r}")
        node = self.root
        for part in ref[2:].split("/") if ref != "#" else []:
            part = urllib.parse.unquote(part).replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise GrammarError(f"$ref {ref!r} at {path} does not resolve")
        return node

    def rule(self, key: str) -> str:
        if key not in self.rules:
            self.rules[key] = len(self.rule_keys)
            self.rule_keys.append(key)
            self.rule_frags.append((-1, -1))
        return key

    def ws_frag(self, a: int) -> int:
        if self.ws <= 0:
            return a
        end = self.nfa.state()
        self.nfa.epsilon(a, end)
        cur = a
        for _ in range(self.ws):
            nxt = self.nfa.state()
            for byte in (0x20, 0x09, 0x0A):
                self.nfa.edge(cur, byte, byte, nxt)
            self.nfa.epsilon(nxt, end)
            cur = nxt
        return end

    def lit(self, a: int, text: bytes) -> int:
        return self.nfa.literal(a, text)

    # -- dispatch
    def frag(self, schema: Any, path: str, stack: tuple[str, ...]) -> tuple[int, int] | None:
        """Start/end NFA states for ``schema``; None when it accepts nothing."""
        self.tick()
        if schema is True:
            schema = {}
        if schema is False:
            return None
        if not isinstance(schema, dict):
            raise GrammarError(f"schema at {path} must be an object or boolean, got {type(schema).__name__}")
        if "if" in schema:
            schema = apply_if(schema, path)
        schema = assertive(schema)
        check_shapes(schema, path)
        if not REFUSED.isdisjoint(schema):
            raise UnsupportedSchemaError(next(key for key in schema if key in REFUSED), path)
        if isinstance(schema.get("$id"), str) and schema is not self.root and not schema["$id"].startswith("#") \
                and _has_ref(schema):
            raise UnsupportedSchemaError("$id", path, "a nested $id changes how the references inside it resolve")
        schema = {k: v for k, v in schema.items() if k != "$id"} if "$id" in schema else schema
        if "not" in schema:
            schema = apply_not(schema, path)
        if "$ref" in schema:
            rest = {k: v for k, v in schema.items() if k not in ("$ref", "$defs", "definitions")}
            ref = schema["$ref"]
            if rest:
                key = "#merge:" + _key_text([ref, rest])
                if key in stack:  # met again inside itself: a call to the merged rule
                    return self.call(key)
                merged = self.synthetic[key] = merge_schemas(self.resolve(ref, path), rest, path, self)
                return self.frag(merged, path, stack + (key,))
            if ref in stack or ref in self.shared:
                return self.call(ref)
            return self.frag(self.resolve(ref, path), ref, stack + (ref,))
        if "allOf" in schema:
            key = "#merge:" + _key_text(schema)
            if key in stack:  # an allOf over a recursive $ref, met again inside itself
                return self.call(key)
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for i, sub in enumerate(schema["allOf"]):
                merged = merge_schemas(merged, sub, f"{path}/allOf/{i}", self)
            self.synthetic[key] = merged
            return self.frag(merged, path, stack + (key,))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                rest = {k: v for k, v in schema.items() if k != key}
                alts = [merge_schemas(rest, alt, f"{path}/{key}/{i}", self) if rest else alt
                        for i, alt in enumerate(schema[key])]
                if key == "oneOf" and not pairwise_disjoint(alts, self, path):
                    alts = exclusive_alternatives(alts, self, path)
                    try:
                        return self.union([self.frag(alt, f"{path}/{key}/{i}", stack) for i, alt in enumerate(alts)])
                    except UnsupportedSchemaError as exc:
                        if exc.keyword != "not":
                            raise
                        raise UnsupportedSchemaError("oneOf", path, f"alternatives may overlap and cannot be made "
                                                                    f"exclusive exactly ({exc}); use anyOf") from None
                return self.union([self.frag(alt, f"{path}/{key}/{i}", stack) for i, alt in enumerate(alts)])
        types = type_set(schema, path)
        if "const" in schema or "enum" in schema:
            return self.literals(schema, types, path)
        if _ANY_KEYS.issuperset(schema) and schema.get("uniqueItems") is not True:
            if "#any" in stack or ("#any" in self.shared and self.nest > 0):
                return self.call("#any")  # one shared rule for every "any JSON value", not a copy per use
            return self.frag(ANY_SCHEMA, path, stack + ("#any",))
        if "integer" in types and "number" in types:
            types = [t for t in types if t != "integer"]
        builders = {"object": self.object_frag, "array": self.array_frag, "string": self.string_frag}
        banned = [v for v in schema.get(NOT_VALUES, []) if value_type_ok(v, types)]
        alts = []
        for t in types:
            out = [v for v in banned if value_type_ok(v, [t])]
            if out and t in ("object", "array"):
                raise UnsupportedSchemaError("not", path, f"'not' of {t} values is not enforced")
            if t in builders:
                self.nest += 1  # values inside this one are a container's items or property values
                try:
                    alts.append(builders[t](schema, path, stack, t) if not out else
                                self.string_except(schema, out, path))
                finally:
                    self.nest -= 1
            elif t in ("number", "integer"):
                alts.append(number_frag(self.nfa, schema, path, t) if not out else
                            self.integer_except(schema, out, path, t))
            elif t == "boolean":
                alts += [self.literal_frag(json_text(b)) for b in (True, False) if not any(v is b for v in out)]
            elif t == "null" and not out:
                alts.append(self.literal_frag(b"null"))
        return self.union(alts)

    def string_except(self, schema: dict, banned: list[str], path: str) -> tuple[int, int]:
        """A string none of ``banned`` (``not: {enum/const}``): canonical escapes only (a sound restriction:
        another escape form of a banned value would be the same string), no other string keyword."""
        for key in ("pattern", "format", "minLength", "maxLength"):
            if key in schema:
                raise UnsupportedSchemaError("not", path, f"'not' of string values together with {key!r}")
        s = self.nfa.state()
        return s, property_key_frag(self.nfa, s, banned)

    def integer_except(self, schema: dict, banned: list, path: str, t: str) -> tuple[int, int]:
        """An integer none of ``banned`` (``not: {enum/const}``), with no bounds (a digit trie)."""
        for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
            if key in schema:
                raise UnsupportedSchemaError("not", path, f"'not' of numbers together with {key!r}")
        if t != "integer":
            raise UnsupportedSchemaError("not", path, "'not' of number values is only enforced on integers")
        return integer_except(self.nfa, [int(v) for v in banned if v == int(v)])

    def call(self, key: str) -> tuple[int, int]:
        """A call to the rule ``key`` (a ``$ref`` target, ``#any``, or a merged schema in ``synthetic``)."""
        s, e = self.nfa.state(), self.nfa.state()
        self.nfa.call(s, self.rule(key), e)
        return s, e

    def union(self, alts: list[tuple[int, int] | None]) -> tuple[int, int] | None:
        alts = [a for a in alts if a is not None]
        if not alts:
            return None
        if len(alts) == 1:
            return alts[0]
        s, e = self.nfa.state(), self.nfa.state()
        for a, b in alts:
            self.nfa.epsilon(s, a)
            self.nfa.epsilon(b, e)
        return s, e

    def literal_frag(self, text: bytes) -> tuple[int, int]:
        s = self.nfa.state()
        return s, self.lit(s, text)

    def literals(self, schema: dict, types: list[str], path: str) -> tuple[int, int] | None:
        for key in schema:
            if key not in ("const", "enum", "type", "nullable", "$defs", "definitions", NOT_VALUES):
                raise UnsupportedSchemaError(key, path, "cannot be combined with enum/const")
        values = [schema["const"]] if "const" in schema else list(schema["enum"])
        if "const" in schema and "enum" in schema:
            values = [v for v in values if any(json_equal(v, w) for w in schema["enum"])]
        banned = schema.get(NOT_VALUES, [])
        values = [v for v in values if not any(json_equal(v, w) for w in banned)]
        alts = []
        for v in values:
            if value_type_ok(v, types):
                alts.append(self.literal_frag(json_text(v)))
        return self.union(alts)

    # -- objects
    def object_frag(self, schema: dict, path: str, stack: tuple[str, ...], _t: str) -> tuple[int, int] | None:
        plan = object_plan(schema, path, self.strict,
                           lambda a, b, at: merge_schemas(a, b, at, self))
        if plan.empty:
            return None
        props, required, extra = plan.props, plan.required, plan.extra
        nfa = self.nfa
        s = nfa.state()
        cur = {False: self.ws_frag(self.lit(s, b"{"))}  # emitted-any -> state
        for name, sub in props.items():
            value = self.frag(sub, f"{path}/properties/{name}", stack) if sub is not False else None
            key_text = json_text(name) + b":"
            if value is None:
                if name in required:
                    return None
                continue
            mid = nfa.state()
            for emitted, st in cur.items():
                a = self.ws_frag(self.lit(st, b",")) if emitted else st
                nfa.epsilon(self.lit(a, key_text), mid)
            vs, ve = value
            nfa.epsilon(self.ws_frag(mid), vs)
            after = self.ws_frag(ve)
            nxt = {True: after}
            if name not in required:
                for emitted, st in cur.items():
                    if emitted in nxt:
                        nfa.epsilon(st, nxt[emitted])
                    else:
                        nxt[emitted] = st
            cur = nxt
        if extra is not False:
            value = self.frag(extra, f"{path}/additionalProperties", stack)
            if value is not None:
                loop = cur.get(True) or nfa.state()
                cur[True] = loop
                key_start = nfa.state()
                for emitted, st in cur.items():
                    nfa.epsilon(self.ws_frag(self.lit(st, b",")) if emitted else st, key_start)
                key_end = property_key_frag(nfa, key_start, [k for k in props])
                vs, ve = value
                nfa.epsilon(self.ws_frag(self.lit(key_end, b":")), vs)
                nfa.epsilon(self.ws_frag(ve), loop)
        e = nfa.state()
        for emitted, st in cur.items():
            if emitted or not plan.nonempty:
                nfa.epsilon(self.lit(st, b"}"), e)
        return s, e

    def finite_values(self, items: Any, path: str) -> list[Any] | None:
        """The values an item schema allows when it is a small finite set (enum/const/boolean/null), else None."""
        for _ in range(8):
            if not isinstance(items, dict):
                return None
            items = assertive(items)
            if set(items) != {"$ref"}:
                break
            items = self.resolve(items["$ref"], path)
        if not isinstance(items, dict) or set(items) - {"type", "enum", "const", "nullable", NOT_VALUES}:
            return None
        types = type_set(items, path)
        if "const" in items or "enum" in items:
            values = [items["const"]] if "const" in items else list(items["enum"])
            if "const" in items and "enum" in items:
                values = [v for v in values if any(json_equal(v, w) for w in items["enum"])]
        elif set(types) <= {"boolean", "null"}:
            values = ([True, False] if "boolean" in types else []) + ([None] if "null" in types else [])
        else:
            return None
        banned = items.get(NOT_VALUES, [])
        values = _distinct([v for v in values if value_type_ok(v, types) and not any(json_equal(v, w) for w in banned)])
        return values if len(values) <= MAX_UNIQUE_VALUES else None

    def unique_array(self, values: list[Any], lo: int, hi: int | None) -> tuple[int, int] | None:
        """``uniqueItems`` over a finite item set: one state per set of values used so far (2^k, k <= 6)."""
        nfa = self.nfa
        texts = [json_text(v) for v in values]
        s, e = nfa.state(), nfa.state()
        at: dict[int, int] = {0: self.ws_frag(self.lit(s, b"["))}  # used-set bitmask -> state after its items
        for used in sorted(range(1 << len(values)), key=lambda m: bin(m).count("1")):
            if used not in at:
                continue
            count = bin(used).count("1")
            if count >= lo:
                nfa.epsilon(self.lit(at[used], b"]"), e)
            if hi is not None and count >= hi:
                continue
            src = self.ws_frag(self.lit(at[used], b",")) if used else at[used]
            for i, text in enumerate(texts):
                if not used >> i & 1:
                    nxt = used | 1 << i
                    if nxt not in at:
                        at[nxt] = nfa.state()
                    nfa.epsilon(self.ws_frag(self.lit(src, text)), at[nxt])
        return (s, e) if lo <= len(values) else None

    # -- strings
    def string_frag(self, schema: dict, path: str, _stack: tuple[str, ...], _t: str) -> tuple[int, int] | None:
        nfa = self.nfa
        lo = int(schema.get("minLength", 0))
        hi = schema.get("maxLength")
        hi = UNBOUNDED if hi is None else int(hi)
        if lo > hi:
            return None
        seg = (lo, hi) if (lo > 0 or hi < UNBOUNDED) else None
        s = nfa.state()
        body = nfa.state(seg)
        nfa.edge(s, 0x22, 0x22, body, RESET)
        e = nfa.state()
        close = CLOSE if seg else 0
        pattern = schema.get("pattern")
        fmt = schema.get("format")
        if fmt is not None and fmt not in STANDARD_FORMATS:
            fmt = None  # not a format JSON Schema defines: an annotation
        if fmt is not None and pattern is not None:
            raise UnsupportedSchemaError("format", path, "format together with pattern is not supported")
        if fmt is not None:
            if fmt not in FORMAT_PATTERNS:
                raise UnsupportedSchemaError("format", path, f"format {fmt!r} is not supported")
            pattern, anchored = FORMAT_PATTERNS[fmt], True
        else:
            anchored = False
        if pattern is None:
            free_string_body(nfa, body, seg)
            nfa.edge(body, 0x22, 0x22, e, close)
            return s, e
        keyword = "format" if fmt is not None else "pattern"
        for end in regex_body(nfa, body, pattern, anchored, seg, path, keyword, self.tick):
            nfa.edge(end, 0x22, 0x22, e, close)
        return s, e

    # -- arrays
    def array_frag(self, schema: dict, path: str, stack: tuple[str, ...], _t: str) -> tuple[int, int] | None:
        if "contains" in schema:
            raise UnsupportedSchemaError("contains", path)
        nfa = self.nfa
        items = schema.get("items", True)
        prefix = list(schema.get("prefixItems", []))
        if isinstance(items, list):  # draft 4-7 tuple form
            prefix, items = items, schema.get("additionalItems", True)
        lo = int(schema.get("minItems", 0))
        hi = schema.get("maxItems")
        hi = None if hi is None else int(hi)
        if hi is not None and lo > hi:
            return None
        if schema.get("uniqueItems") is True and not (hi is not None and hi <= 1):
            values = None if prefix else self.finite_values(items, path)
            if values is not None:
                return self.unique_array(values, lo, hi)
            if not (prefix and (items is False or hi is not None and hi <= len(prefix))
                    and pairwise_disjoint(prefix, self, path)):  # disjoint positions are always unique
                raise UnsupportedSchemaError("uniqueItems", path, "uniqueItems is enforced only over up to "
                                             f"{MAX_UNIQUE_VALUES} enum/const/boolean/null item values, or on "
                                             "tuples whose positions cannot match one value")
        for key, count in (("minItems", lo), ("maxItems", hi)):
            if count is not None and count > MAX_ITEM_POSITIONS:
                raise UnsupportedSchemaError(key, path, f"{key} above {MAX_ITEM_POSITIONS} is not supported "
                                                        "(each counted position is a copy of the item grammar)")
        s, e = nfa.state(), nfa.state()
        after_open = self.ws_frag(self.lit(s, b"["))
        positions = [after_open]  # state after j items
        explicit = max(len(prefix), lo) if hi is None else hi
        rest_ok = items is not False

        def item_schema(j: int) -> Any:
            return prefix[j] if j < len(prefix) else items

        j = 0
        last = (-1, -1)
        while j < explicit:
            if j >= len(prefix) and not rest_ok:
                break
            frag = self.frag(item_schema(j), f"{path}/items/{j}", stack)
            if frag is None:
                break
            a = positions[j]
            if j > 0:
                a = self.ws_frag(self.lit(a, b","))
            nfa.epsilon(a, frag[0])
            positions.append(self.ws_frag(frag[1]))
            last = frag
            j += 1
        if hi is None and rest_ok and j == explicit and j > len(prefix):
            # more of the same item: loop back into the last explicit copy instead of building another
            nfa.epsilon(self.ws_frag(self.lit(positions[j], b",")), last[0])
        elif hi is None and rest_ok and j == explicit:
            frag = self.frag(items, f"{path}/items", stack)
            if frag is not None:
                if j == 0:
                    nfa.epsilon(positions[0], frag[0])
                    loop = self.ws_frag(frag[1])
                    positions.append(loop)
                else:
                    loop = positions[j]
                nfa.epsilon(self.ws_frag(self.lit(loop, b",")), frag[0])
                if j > 0:
                    nfa.epsilon(self.ws_frag(frag[1]), loop)
        for count, st in enumerate(positions):
            if count >= lo:
                nfa.epsilon(self.lit(st, b"]"), e)
        return s, e


def _distinct(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if not any(json_equal(v, w) for w in out):
            out.append(v)
    return out


def _key_text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _has_ref(schema: Any) -> bool:
    return '"$ref"' in json.dumps(schema)


def compile_schema_automaton(schema: Any, *, whitespace: int = 0, max_states: int = 200_000,
                             deadline_s: float = 5.0, strict: bool = False) -> Automaton:
    """Compile a JSON Schema (dict/bool, or "any_json"/"any_object") into an :class:`Automaton`.

    Raises :class:`UnsupportedSchemaError` for keywords we cannot enforce, :class:`GrammarError` for
    schemas that accept nothing, :class:`GrammarTooLargeError` past the state budget or deadline.
    """
    if schema == "any_json":
        schema = {}
    elif schema == "any_object":
        schema = {"type": "object"}
    elif isinstance(schema, str):
        raise GrammarError(f"unknown grammar mode {schema!r}: expected a JSON Schema, 'any_json' or 'any_object'")
    if whitespace < 0:
        raise GrammarError(f"whitespace must be >= 0, got {whitespace}")
    try:
        text = json.dumps(schema, ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise GrammarError("schema holds a lone surrogate (not a Unicode character) in a string") from exc
    except (TypeError, ValueError, RecursionError) as exc:
        raise GrammarError(f"schema is not JSON: {type(exc).__name__}: {exc}") from exc
    deadline = time.perf_counter() + deadline_s
    try:
        # (no key "$id"/"$anchor"/"$ref" in the text: none in the schema, and no walk of it to find them)
        if '"$id"' in text or '"$anchor"' in text:
            schema = localize_refs(schema)
        shared = _shared_refs(schema) if '"$ref"' in text else frozenset()
        # shared rules, most first: "#any" (every free value, e.g. of extra keys) and the large $ref targets;
        # where a call cannot sit (it overlaps its context) fewer, then none (everything inlined)
        for tier in (shared | {"#any"}, shared):
            if tier:
                try:
                    return _compile(schema, whitespace, max_states, deadline_s, strict, tier, deadline)
                except _SharingFailed:
                    pass
        return _compile(schema, whitespace, max_states, deadline_s, strict, frozenset(), deadline)
    except RecursionError as exc:
        raise GrammarTooLargeError("schema is nested too deeply to compile") from exc


SHARE_REF_MIN_CHARS = 400  # a $ref target this large (as JSON text), used twice or more, is compiled once


class _SharingFailed(Exception):
    pass


def _shared_refs(schema: Any) -> frozenset[str]:
    """Local ``$ref`` targets referenced at least twice whose schema, with its own references expanded, is
    large: each becomes one rule that every use calls, instead of a copy per use (the DFA otherwise grows
    with every use)."""
    counts: dict[str, int] = {}
    inner: dict[int, list[str]] = {}

    def refs_in(node: Any) -> list[str]:
        out = []
        todo = [node]
        while todo:
            n = todo.pop()
            if isinstance(n, dict):
                ref = n.get("$ref")
                if isinstance(ref, str) and ref.startswith("#/"):
                    out.append(ref)
                todo.extend(n.values())
            elif isinstance(n, list):
                todo.extend(n)
        return out

    for ref in refs_in(schema):
        counts[ref] = counts.get(ref, 0) + 1
    targets: dict[str, Any] = {}
    for ref in counts:
        node = schema
        try:
            for part in ref[2:].split("/"):
                part = urllib.parse.unquote(part).replace("~1", "/").replace("~0", "~")
                node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError, TypeError):
            continue
        targets[ref] = node
    sizes: dict[str, int] = {}

    def size(ref: str, seen: frozenset[str]) -> int:
        if ref in sizes:
            return sizes[ref]
        if ref in seen or ref not in targets:
            return 0
        node = targets[ref]
        key = id(node)
        if key not in inner:
            inner[key] = refs_in(node)
        total = len(json.dumps(node)) + sum(size(r, seen | {ref}) for r in inner[key])
        sizes[ref] = total = min(total, 1 << 30)
        return total

    return frozenset(r for r, n in counts.items() if n >= 2 and r in targets and size(r, frozenset()) >= SHARE_REF_MIN_CHARS)


def _compile(schema: Any, whitespace: int, max_states: int, deadline_s: float, strict: bool,
             shared: frozenset[str], deadline: float) -> Automaton:
    comp = _Compiler(schema, whitespace, max_states, deadline_s, strict, shared, deadline)
    comp.rule("#")
    i = 0
    while i < len(comp.rule_keys):
        key = comp.rule_keys[i]
        target = schema if key == "#" else comp.resolve(key, key)
        frag = comp.frag(target, key, (key,))
        if frag is None:
            if key in shared:
                raise _SharingFailed(key)
            raise GrammarError(f"schema at {key} accepts no JSON value")
        comp.rule_frags[i] = frag
        i += 1
    try:
        return determinise(comp.nfa, comp.rule_keys, comp.rule_frags, max_states, comp.tick, comp.deadline)
    except UnsupportedSchemaError as exc:
        if shared and exc.keyword == "$ref":
            raise _SharingFailed(str(exc)) from exc
        raise
