"""JSON Schema -> a byte-level pushdown automaton the token-mask kernel runs.

Design (see also :mod:`realizar_ort.grammar`):

- Every schema node becomes an NFA fragment over bytes (Thompson construction). Sub-schemas are inlined,
  so ``anyOf`` alternatives are merged by determinisation; only a *recursive* ``$ref`` (one already being
  inlined, e.g. a tree, or the nesting of generic JSON) becomes a **call**: the caller pushes a return state
  and jumps to the callee rule's start; a rule in an accepting state returns (pops) on a byte it cannot
  consume. Each rule is determinised separately; all DFA states share one dense ``[states, 256]`` table.
- String length bounds use one **counter** (strings never nest): an edge flagged ``RESET`` (opening quote)
  zeroes it, ``INC`` (a completed character) needs ``counter < cmax[state]``, ``CLOSE`` (closing quote)
  needs ``counter >= cmin[state]``. So ``maxLength: 5000`` costs a handful of states, not 5000.
- Output is compact by default (``whitespace=0``); ``whitespace=n`` allows up to ``n`` bytes of
  ``[ \\t\\n]`` at each structural point, never more. Known properties come in schema order; a property
  missing from ``required`` may be skipped. ``additionalProperties`` absent counts as ``false`` when
  ``properties`` is given (as OpenAI's strict mode does) and as ``true`` otherwise.
- Refuse, never ignore: any keyword that would constrain the value and that we do not enforce raises
  :class:`UnsupportedSchemaError` naming it. Compilation has a state budget and a deadline.

Cost: pure Python, roughly 10-20 us per DFA state; callers cache the result (see ``compile_json_schema``).
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CLOSE",
    "INC",
    "RESET",
    "ROOM",
    "UNBOUNDED",
    "Automaton",
    "GrammarError",
    "GrammarTooLargeError",
    "UnsupportedSchemaError",
    "compile_schema_automaton",
]

INC, CLOSE, RESET, ROOM = 1, 2, 4, 8  # ROOM: starts a multi-byte character, needs counter < cmax
UNBOUNDED = 1 << 30
MAX_ITEM_POSITIONS = 128

ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "$comment", "$schema", "$id", "deprecated", "readOnly",
    "writeOnly", "$anchor", "contentMediaType", "contentEncoding", "discriminator", "strict",
})
SUPPORTED = frozenset({
    "type", "properties", "required", "additionalProperties", "enum", "const", "anyOf", "oneOf", "allOf",
    "$ref", "$defs", "definitions", "items", "prefixItems", "additionalItems", "minItems", "maxItems",
    "minLength", "maxLength", "pattern", "format", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "nullable", "uniqueItems",
}) | ANNOTATIONS
ALL_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")

FORMAT_PATTERNS = {
    "date": r"(000[1-9]|00[1-9]\d|0[1-9]\d\d|[1-9]\d{3})-((0[13578]|1[02])-(0[1-9]|[12]\d|3[01])|(0[469]|11)-(0[1-9]|[12]\d|30)|02-(0[1-9]|1\d|2[0-8]))",
    "time": r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)",
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+",
    "ipv4": r"((25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)",
}
FORMAT_PATTERNS["date-time"] = FORMAT_PATTERNS["date"] + "T" + FORMAT_PATTERNS["time"]


class GrammarError(ValueError):
    """A schema that cannot become a grammar (bad, unsatisfiable, or too large)."""


class UnsupportedSchemaError(GrammarError):
    """A keyword or construct we cannot enforce; ``keyword`` names it, ``path`` is a JSON pointer."""

    def __init__(self, keyword: str, path: str, reason: str = "not supported") -> None:
        self.keyword = keyword
        self.path = path or "#"
        super().__init__(f"unsupported JSON Schema keyword {keyword!r} at {self.path}: {reason}")


class GrammarTooLargeError(GrammarError):
    """Compilation exceeded its state budget or deadline."""


@dataclass(frozen=True)
class Automaton:
    """The compiled machine, read-only. State ``start`` begins the value; see the module docstring."""

    trans: np.ndarray  # int32 [states, 256], -1 = no consuming edge
    flags: np.ndarray  # uint8 [states, 256], INC | CLOSE | RESET
    final: np.ndarray  # bool [states]: the current rule's value is complete
    call_start: np.ndarray  # int32 [states]: callee start state or -1
    call_ret: np.ndarray  # int32 [states]: state to return to after the call
    cmin: np.ndarray  # int32 [states]: minLength of the string this state is inside (0 if none)
    cmax: np.ndarray  # int32 [states]: maxLength (UNBOUNDED if none)
    plain_loop: np.ndarray  # bool [states]: every plain string character keeps us here
    loop_bits: np.ndarray  # uint64 [states, 5]: bytes looping on the state (4 words), word 4 = any
    free_string: np.ndarray  # bool [states]: exactly the body of a free string (any escape form)
    counted: np.ndarray  # bool [states]: inside a string with length bounds
    start: int

    @property
    def num_states(self) -> int:
        return int(self.trans.shape[0])

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.trans, self.flags, self.final, self.call_start, self.call_ret, self.cmin, self.cmax)


# ----------------------------------------------------------------------------------------------- NFA
class _Nfa:
    def __init__(self, max_states: int) -> None:
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[int, int, int, int]]] = []
        self.calls: list[list[tuple[str, int]]] = []
        self.seg: list[tuple[int, int] | None] = []
        self.free_bodies: set[int] = set()  # body states of free strings (any escape form)
        self.max_states = max_states

    def state(self, seg: tuple[int, int] | None = None) -> int:
        if len(self.eps) >= self.max_states:
            raise GrammarTooLargeError(f"schema needs more than {self.max_states} automaton states")
        self.eps.append([])
        self.edges.append([])
        self.calls.append([])
        self.seg.append(seg)
        return len(self.eps) - 1

    def edge(self, a: int, lo: int, hi: int, b: int, flags: int = 0) -> None:
        self.edges[a].append((lo, hi, b, flags))

    def literal(self, a: int, data: bytes, seg: tuple[int, int] | None = None, last_flags: int = 0) -> int:
        for i, byte in enumerate(data):
            b = self.state(seg)
            self.edge(a, byte, byte, b, last_flags if i == len(data) - 1 else 0)
            a = b
        return a


def _utf8_multibyte_paths() -> list[list[tuple[int, int]]]:
    return [
        [(0xC2, 0xDF), (0x80, 0xBF)],
        [(0xE0, 0xE0), (0xA0, 0xBF), (0x80, 0xBF)],
        [(0xE1, 0xEC), (0x80, 0xBF), (0x80, 0xBF)],
        [(0xED, 0xED), (0x80, 0x9F), (0x80, 0xBF)],
        [(0xEE, 0xEF), (0x80, 0xBF), (0x80, 0xBF)],
        [(0xF0, 0xF0), (0x90, 0xBF), (0x80, 0xBF), (0x80, 0xBF)],
        [(0xF1, 0xF3), (0x80, 0xBF), (0x80, 0xBF), (0x80, 0xBF)],
        [(0xF4, 0xF4), (0x80, 0x8F), (0x80, 0xBF), (0x80, 0xBF)],
    ]


PLAIN_ASCII = [(0x20, 0x21), (0x23, 0x5B), (0x5D, 0x7F)]
HEX = [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)]


def _canonical(ch: str) -> bytes:
    """The one encoding of ``ch`` inside a JSON string that ``json.dumps(ensure_ascii=False)`` writes."""
    if ord(ch) < 0x80:
        return _ASCII_CANONICAL[ord(ch)]
    return json.dumps(ch, ensure_ascii=False)[1:-1].encode("utf-8")


_ASCII_CANONICAL = [json.dumps(chr(o))[1:-1].encode("ascii") for o in range(0x80)]


def _json_text(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


# ------------------------------------------------------------------------------------------ compiler
class _Compiler:
    def __init__(self, root: Any, whitespace: int, max_states: int, deadline_s: float) -> None:
        self.root = root
        self.ws = whitespace
        self.nfa = _Nfa(max_states)
        self.deadline = time.perf_counter() + deadline_s
        self.deadline_s = deadline_s
        self.rules: dict[str, int] = {}  # ref key -> rule index
        self.rule_keys: list[str] = []
        self.rule_frags: list[tuple[int, int]] = []
        self.counter_ticks = 0

    # -- plumbing
    def tick(self) -> None:
        self.counter_ticks += 1
        if self.counter_ticks % 64 == 0 and time.perf_counter() > self.deadline:
            raise GrammarTooLargeError(f"schema compilation exceeded {self.deadline_s:.1f} s")

    def resolve(self, ref: str, path: str) -> Any:
        if ref == "#any":
            return _ANY_SCHEMA
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
        self.nfa.eps[a].append(end)
        cur = a
        for _ in range(self.ws):
            nxt = self.nfa.state()
            for byte in (0x20, 0x09, 0x0A):
                self.nfa.edge(cur, byte, byte, nxt)
            self.nfa.eps[nxt].append(end)
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
        for key in schema:
            if key not in SUPPORTED:
                raise UnsupportedSchemaError(key, path)
        if "$id" in schema and schema is not self.root:
            raise UnsupportedSchemaError("$id", path, "a nested $id changes how references resolve")
        if "$ref" in schema:
            rest = {k: v for k, v in schema.items() if k not in ANNOTATIONS and k not in ("$ref", "$defs", "definitions")}
            ref = schema["$ref"]
            if rest:
                return self.frag(_merge(self.resolve(ref, path), rest, path, self), path, stack)
            if ref in stack:
                s, e = self.nfa.state(), self.nfa.state()
                self.nfa.calls[s].append((self.rule(ref), e))
                return s, e
            return self.frag(self.resolve(ref, path), ref, stack + (ref,))
        if "allOf" in schema:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for i, sub in enumerate(schema["allOf"]):
                merged = _merge(merged, sub, f"{path}/allOf/{i}", self)
            return self.frag(merged, path, stack)
        for key in ("anyOf", "oneOf"):
            if key in schema:
                rest = {k: v for k, v in schema.items() if k != key}
                alts = [_merge(rest, alt, f"{path}/{key}/{i}", self) if rest else alt
                        for i, alt in enumerate(schema[key])]
                if key == "oneOf" and not _pairwise_disjoint(alts, self, path):
                    raise UnsupportedSchemaError("oneOf", path, "alternatives may overlap; use anyOf")
                return self.union([self.frag(alt, f"{path}/{key}/{i}", stack) for i, alt in enumerate(alts)])
        types = _type_set(schema, path)
        if "const" in schema or "enum" in schema:
            return self.literals(schema, types, path)
        if schema.get("uniqueItems") is True:
            raise UnsupportedSchemaError("uniqueItems", path, "uniqueItems: true cannot be enforced")
        if not any(k not in ANNOTATIONS and k not in ("$defs", "definitions", "uniqueItems") for k in schema):
            if "#any" in stack:
                s, e = self.nfa.state(), self.nfa.state()
                self.nfa.calls[s].append((self.rule("#any"), e))
                return s, e
            return self.frag(_ANY_SCHEMA, path, stack + ("#any",))
        if "integer" in types and "number" in types:
            types = [t for t in types if t != "integer"]
        builders = {"object": self.object_frag, "array": self.array_frag, "string": self.string_frag,
                    "number": self.number_frag, "integer": self.number_frag}
        alts = []
        for t in types:
            if t in builders:
                alts.append(builders[t](schema, path, stack, t))
            elif t == "boolean":
                alts += [self.literal_frag(b"true"), self.literal_frag(b"false")]
            elif t == "null":
                alts.append(self.literal_frag(b"null"))
        return self.union(alts)

    def union(self, alts: list[tuple[int, int] | None]) -> tuple[int, int] | None:
        alts = [a for a in alts if a is not None]
        if not alts:
            return None
        if len(alts) == 1:
            return alts[0]
        s, e = self.nfa.state(), self.nfa.state()
        for a, b in alts:
            self.nfa.eps[s].append(a)
            self.nfa.eps[b].append(e)
        return s, e

    def literal_frag(self, text: bytes) -> tuple[int, int]:
        s = self.nfa.state()
        return s, self.lit(s, text)

    def literals(self, schema: dict, types: list[str], path: str) -> tuple[int, int] | None:
        for key in schema:
            if key not in ANNOTATIONS and key not in ("const", "enum", "type", "nullable", "$defs", "definitions"):
                raise UnsupportedSchemaError(key, path, "cannot be combined with enum/const")
        values = [schema["const"]] if "const" in schema else list(schema["enum"])
        if "const" in schema and "enum" in schema:
            values = [v for v in values if any(_json_equal(v, w) for w in schema["enum"])]
        alts = []
        for v in values:
            if _value_type_ok(v, types):
                alts.append(self.literal_frag(_json_text(v)))
        return self.union(alts)

    # -- objects
    def object_frag(self, schema: dict, path: str, stack: tuple[str, ...], _t: str) -> tuple[int, int] | None:
        for key in ("minProperties", "maxProperties", "patternProperties", "propertyNames"):
            if key in schema:
                raise UnsupportedSchemaError(key, path)
        props: dict = schema.get("properties", {})
        required = list(schema.get("required", []))
        extra = schema.get("additionalProperties", not props)
        nfa = self.nfa
        for name in required:
            if name not in props and extra is False:
                return None  # required property that may not appear: no value
            if name not in props:
                raise UnsupportedSchemaError("required", path, f"required property {name!r} is not in properties")
        s = nfa.state()
        cur = {False: self.ws_frag(self.lit(s, b"{"))}  # emitted-any -> state
        for name, sub in props.items():
            value = self.frag(sub, f"{path}/properties/{name}", stack)
            key_text = _json_text(name) + b":"
            if value is None:
                if name in required:
                    return None
                continue
            mid = nfa.state()
            for emitted, st in cur.items():
                a = self.ws_frag(self.lit(st, b",")) if emitted else st
                nfa.eps[self.lit(a, key_text)].append(mid)
            vs, ve = value
            nfa.eps[self.ws_frag(mid)].append(vs)
            after = self.ws_frag(ve)
            nxt = {True: after}
            if name not in required:
                for emitted, st in cur.items():
                    if emitted in nxt:
                        nfa.eps[st].append(nxt[emitted])
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
                    nfa.eps[self.ws_frag(self.lit(st, b",")) if emitted else st].append(key_start)
                key_end = self.key_frag(key_start, [k for k in props], path)
                vs, ve = value
                nfa.eps[self.ws_frag(self.lit(key_end, b":"))].append(vs)
                nfa.eps[self.ws_frag(ve)].append(loop)
        e = nfa.state()
        for st in cur.values():
            nfa.eps[self.lit(st, b"}")].append(e)
        return s, e

    def key_frag(self, a: int, excluded: list[str], path: str) -> int:
        """A quoted property name that is none of ``excluded`` (canonical escapes only)."""
        nfa = self.nfa
        body = nfa.state()
        nfa.edge(a, 0x22, 0x22, body)
        end = nfa.state()
        if not excluded:
            free = self.canonical_any_loop(body, None)
            nfa.edge(free, 0x22, 0x22, end)
            return end
        # a byte trie of the excluded names; leaving the trie drops into a free canonical-string loop
        free = nfa.state()
        self.canonical_any_loop(free, free)
        nfa.edge(free, 0x22, 0x22, end)
        trie: dict[bytes, int] = {b"": body}
        names = {_canonical_text(k) for k in excluded}
        prefixes = {n[:i] for n in names for i in range(len(n) + 1)}
        for prefix in sorted(prefixes, key=len):
            st = trie[prefix]
            children = {p[len(prefix)] for p in prefixes if len(p) == len(prefix) + 1 and p.startswith(prefix)}
            for byte in children:
                trie[prefix + bytes([byte])] = nfa.state()
                nfa.edge(st, byte, byte, trie[prefix + bytes([byte])])
            if prefix not in names and _at_char_boundary(prefix):
                nfa.edge(st, 0x22, 0x22, end)
            self.canonical_step_except(st, prefix, children, free)
        return end

    def canonical_step_except(self, st: int, prefix: bytes, taken: set[int], free: int) -> None:
        """From a trie node, every canonical continuation byte not in ``taken`` leads into ``free``."""
        nfa = self.nfa
        if not _at_char_boundary(prefix):
            # inside a UTF-8 character or an escape: finish it by any route the trie does not take
            for path in _completions(prefix):
                first = [r for r in _ranges([x for x in range(path[0][0], path[0][1] + 1) if x not in taken])]
                cur_states = [st]
                for i, ranges in enumerate([first] + [[r] for r in path[1:]]):
                    nxt = free if i == len(path) - 1 else nfa.state()
                    for src in cur_states:
                        for lo, hi in ranges:
                            nfa.edge(src, lo, hi, nxt)
                    cur_states = [nxt]
            return
        for lo, hi in PLAIN_ASCII:
            for byte in range(lo, hi + 1):
                if byte not in taken:
                    nfa.edge(st, byte, byte, free)
        sub = nfa.state()
        self.canonical_any_loop(sub, free, ascii_plain=False)
        for lo, hi, b, f in list(nfa.edges[sub]):
            for byte in range(lo, hi + 1):
                if byte not in taken:
                    nfa.edge(st, byte, byte, b, f)

    def canonical_any_loop(self, a: int, back: int | None, ascii_plain: bool = True,
                           seg: tuple[int, int] | None = None) -> int:
        """Edges for one canonical JSON-string character from ``a`` to ``back`` (a loop when equal)."""
        nfa = self.nfa
        if back is None:
            back = a
        inc = INC if seg else 0
        if ascii_plain:
            for lo, hi in PLAIN_ASCII:
                nfa.edge(a, lo, hi, back, inc)
        for path in _utf8_multibyte_paths():
            cur = a
            for i, (lo, hi) in enumerate(path):
                last = i == len(path) - 1
                nxt = back if last else nfa.state(seg)
                nfa.edge(cur, lo, hi, nxt, inc if last else (ROOM if seg and i == 0 else 0))
                cur = nxt
        esc = nfa.state(seg)
        nfa.edge(a, 0x5C, 0x5C, esc, ROOM if seg else 0)
        for byte in b'"\\bfnrt':
            nfa.edge(esc, byte, byte, back, inc)
        u = [nfa.state(seg) for _ in range(4)]
        nfa.edge(esc, ord("u"), ord("u"), u[0])
        nfa.edge(u[0], 0x30, 0x30, u[1])
        nfa.edge(u[1], 0x30, 0x30, u[2])
        nfa.edge(u[2], 0x30, 0x30, u[3])
        nfa.edge(u[2], 0x31, 0x31, u[3])
        for lo, hi in HEX:  # \u00XX for control characters without a short escape
            nfa.edge(u[3], lo, hi, back, inc)
        return back

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
        if fmt is not None and pattern is not None:
            raise UnsupportedSchemaError("format", path, "format together with pattern is not supported")
        if fmt is not None:
            if fmt not in FORMAT_PATTERNS:
                raise UnsupportedSchemaError("format", path, f"format {fmt!r} is not supported")
            pattern, anchored = FORMAT_PATTERNS[fmt], True
        else:
            anchored = False
        if pattern is None:
            self.free_string_body(body, seg)
            nfa.edge(body, 0x22, 0x22, e, close)
            return s, e
        keyword = "format" if fmt is not None else "pattern"
        for end in self.regex_body(body, pattern, anchored, seg, path, keyword):
            nfa.edge(end, 0x22, 0x22, e, close)
        return s, e

    def free_string_body(self, body: int, seg: tuple[int, int] | None) -> None:
        """Any JSON string content (any escape form), looping on ``body``."""
        nfa = self.nfa
        nfa.free_bodies.add(body)
        inc = INC if seg else 0
        for lo, hi in PLAIN_ASCII:
            nfa.edge(body, lo, hi, body, inc)
        for path in _utf8_multibyte_paths():
            cur = body
            for i, (lo, hi) in enumerate(path):
                last = i == len(path) - 1
                nxt = body if last else nfa.state(seg)
                nfa.edge(cur, lo, hi, nxt, inc if last else (ROOM if seg and i == 0 else 0))
                cur = nxt
        esc = nfa.state(seg)
        nfa.edge(body, 0x5C, 0x5C, esc, ROOM if seg else 0)
        for byte in b'"\\/bfnrt':
            nfa.edge(esc, byte, byte, body, inc)
        h = [nfa.state(seg) for _ in range(4)]
        hd = nfa.state(seg)
        nfa.edge(esc, ord("u"), ord("u"), h[0])
        # no surrogate escapes (\uD800-\uDFFF): they are not characters
        for lo, hi in [(0x30, 0x39), (0x41, 0x43), (0x45, 0x46), (0x61, 0x63), (0x65, 0x66)]:
            nfa.edge(h[0], lo, hi, h[1])
        for byte in (ord("d"), ord("D")):
            nfa.edge(h[0], byte, byte, hd)
        nfa.edge(hd, 0x30, 0x37, h[2])
        for lo2, hi2 in HEX:
            nfa.edge(h[1], lo2, hi2, h[2])
            nfa.edge(h[2], lo2, hi2, h[3])
            nfa.edge(h[3], lo2, hi2, body, inc)

    def regex_body(self, body: int, pattern: str, anchored: bool, seg: tuple[int, int] | None,
                   path: str, keyword: str) -> list[int]:
        from interegular.fsm import anything_else

        if not anchored:
            core = pattern
            if core.startswith("^"):
                core = core[1:]
            else:
                core = r"[\s\S]*(" + core + ")" if core else core
            if core.endswith("$") and (len(core) - 1 - len(core[:-1].rstrip("\\"))) % 2 == 0:
                core = core[:-1]
            else:
                core = "(" + core + r")[\s\S]*" if core else r"[\s\S]*"
            pattern = core
        try:
            fsm = _regex_fsm(pattern)
        except Exception as exc:  # interegular raises several types for unsupported syntax
            raise UnsupportedSchemaError(keyword, path, f"regex {pattern!r} cannot be compiled: {exc}") from exc
        nfa = self.nfa
        inc = INC if seg else 0
        by_tk = fsm.alphabet.by_transition
        explicit = {c for chars in by_tk.values() for c in chars if c is not anything_else}
        non_ascii = any(ord(c) > 0x7F for c in explicit)
        states = {q: (body if q == fsm.initial else nfa.state(seg)) for q in fsm.map}
        ends = []
        for q, row in fsm.map.items():
            self.tick()
            src = states[q]
            prefix_states: dict[bytes, int] = {}
            for tk, dst in row.items():
                target = states[dst]
                chars = by_tk[tk]
                encodings = []
                for c in chars:
                    if c is anything_else:
                        if non_ascii:
                            raise UnsupportedSchemaError(keyword, path, "negated classes mixed with non-ASCII characters")
                        encodings += [_ASCII_CANONICAL[o] for o in range(0x80) if chr(o) not in explicit]
                        for mb in _utf8_multibyte_paths():
                            cur = src
                            for i, (lo, hi) in enumerate(mb):
                                last = i == len(mb) - 1
                                nxt = target if last else nfa.state(seg)
                                nfa.edge(cur, lo, hi, nxt, inc if last else (ROOM if seg and i == 0 else 0))
                                cur = nxt
                    else:
                        encodings.append(_canonical(c))
                singles = sorted(enc[0] for enc in encodings if len(enc) == 1)
                for lo, hi in _ranges(singles):
                    nfa.edge(src, lo, hi, target, inc)
                for enc in encodings:
                    if len(enc) == 1:
                        continue
                    cur = src
                    for i in range(len(enc) - 1):
                        key = enc[: i + 1]
                        if key not in prefix_states:
                            prefix_states[key] = nfa.state(seg)
                            nfa.edge(cur, enc[i], enc[i], prefix_states[key], ROOM if seg and i == 0 else 0)
                        cur = prefix_states[key]
                    nfa.edge(cur, enc[-1], enc[-1], target, inc)
            if q in fsm.finals:
                ends.append(src)
        return ends

    # -- numbers
    def number_frag(self, schema: dict, path: str, _stack: tuple[str, ...], t: str) -> tuple[int, int] | None:
        if "multipleOf" in schema:
            raise UnsupportedSchemaError("multipleOf", path)
        lo, hi, lo_key, hi_key = _bounds(schema, path)
        nfa = self.nfa
        s, e = nfa.state(), nfa.state()
        digit19, digit = (0x31, 0x39), (0x30, 0x39)
        if t == "integer":
            lo_i = None if lo is None else math.ceil(lo[0]) + (1 if lo[1] and lo[0] == math.ceil(lo[0]) else 0)
            hi_i = None if hi is None else math.floor(hi[0]) - (1 if hi[1] and hi[0] == math.floor(hi[0]) else 0)
            if lo_i is not None and hi_i is not None and lo_i > hi_i:
                return None
            self.integer_range(s, e, lo_i, hi_i)
            return s, e
        if hi is not None:
            raise UnsupportedSchemaError(hi_key, path, "bounds on non-integer numbers are enforced only as minimum: 0")
        if lo is not None and not (lo[0] == 0 and not lo[1]):
            raise UnsupportedSchemaError(lo_key, path, "bounds on non-integer numbers are enforced only as minimum: 0")
        start = s
        if lo is None:
            start = nfa.state()
            nfa.eps[s].append(start)
            nfa.edge(s, 0x2D, 0x2D, start)
        int_end = nfa.state()
        nfa.edge(start, 0x30, 0x30, int_end)
        more = nfa.state()
        nfa.edge(start, *digit19, more)
        nfa.edge(more, *digit, more)
        nfa.eps[more].append(int_end)
        frac0, frac = nfa.state(), nfa.state()
        nfa.edge(int_end, 0x2E, 0x2E, frac0)
        nfa.edge(frac0, *digit, frac)
        nfa.edge(frac, *digit, frac)
        exp_at = nfa.state()
        nfa.eps[int_end].append(exp_at)
        nfa.eps[frac].append(exp_at)
        nfa.eps[exp_at].append(e)
        exp0, exp_sign, exp_d = nfa.state(), nfa.state(), nfa.state()
        nfa.edge(exp_at, 0x45, 0x45, exp0)
        nfa.edge(exp_at, 0x65, 0x65, exp0)
        nfa.edge(exp0, 0x2B, 0x2B, exp_sign)
        nfa.edge(exp0, 0x2D, 0x2D, exp_sign)
        nfa.eps[exp0].append(exp_sign)
        nfa.edge(exp_sign, *digit, exp_d)
        nfa.edge(exp_d, *digit, exp_d)
        nfa.eps[exp_d].append(e)
        return s, e

    def integer_range(self, s: int, e: int, lo: int | None, hi: int | None) -> None:
        """Canonical decimal integers in [lo, hi] (None = unbounded)."""
        nfa = self.nfa
        # non-negative part [max(lo, 0), hi]
        if hi is None or hi >= 0:
            self.natural_range(s, e, max(lo, 0) if lo is not None else 0, hi)
        # negative part: -n for n in [max(1, -hi), -lo]
        if lo is None or lo < 0:
            neg_lo = 1 if hi is None or hi >= 0 else -hi
            neg_hi = None if lo is None else -lo
            if neg_hi is None or neg_lo <= neg_hi:
                m = nfa.state()
                nfa.edge(s, 0x2D, 0x2D, m)
                self.natural_range(m, e, neg_lo, neg_hi)

    def natural_range(self, s: int, e: int, lo: int, hi: int | None) -> None:
        nfa = self.nfa
        if lo == 0:
            nfa.edge(s, 0x30, 0x30, e)
            if hi == 0:
                return
            lo = 1
        top_len = len(str(hi)) if hi is not None else len(str(lo))
        for length in range(len(str(lo)), top_len + 1):
            a = max(lo, 10 ** (length - 1))
            b = min(hi, 10 ** length - 1) if hi is not None else 10 ** length - 1
            if a <= b:
                self.same_length_range(s, e, str(a), str(b))
        if hi is None:  # every longer number
            cur = nfa.state()
            nfa.edge(s, 0x31, 0x39, cur)
            for _ in range(top_len - 1):
                nxt = nfa.state()
                nfa.edge(cur, 0x30, 0x39, nxt)
                cur = nxt
            tail = nfa.state()
            nfa.edge(cur, 0x30, 0x39, tail)
            nfa.edge(tail, 0x30, 0x39, tail)
            nfa.eps[tail].append(e)

    def same_length_range(self, s: int, e: int, a: str, b: str) -> None:
        nfa = self.nfa
        if not a:
            nfa.eps[s].append(e)
            return
        if a[0] == b[0]:
            m = nfa.state()
            nfa.edge(s, ord(a[0]), ord(a[0]), m)
            self.same_length_range(m, e, a[1:], b[1:])
            return
        rest = len(a) - 1
        m = nfa.state()
        nfa.edge(s, ord(a[0]), ord(a[0]), m)
        self.same_length_range(m, e, a[1:], "9" * rest)
        if ord(a[0]) + 1 <= ord(b[0]) - 1:
            cur = nfa.state() if rest else e
            nfa.edge(s, ord(a[0]) + 1, ord(b[0]) - 1, cur)
            for i in range(rest):
                nxt = e if i == rest - 1 else nfa.state()
                nfa.edge(cur, 0x30, 0x39, nxt)
                cur = nxt
        m2 = nfa.state()
        nfa.edge(s, ord(b[0]), ord(b[0]), m2)
        self.same_length_range(m2, e, "0" * rest, b[1:])

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
            nfa.eps[a].append(frag[0])
            positions.append(self.ws_frag(frag[1]))
            last = frag
            j += 1
        if hi is None and rest_ok and j == explicit and j > len(prefix):
            # more of the same item: loop back into the last explicit copy instead of building another
            nfa.eps[self.ws_frag(self.lit(positions[j], b","))].append(last[0])
        elif hi is None and rest_ok and j == explicit:
            frag = self.frag(items, f"{path}/items", stack)
            if frag is not None:
                if j == 0:
                    nfa.eps[positions[0]].append(frag[0])
                    loop = self.ws_frag(frag[1])
                    positions.append(loop)
                else:
                    loop = positions[j]
                nfa.eps[self.ws_frag(self.lit(loop, b","))].append(frag[0])
                if j > 0:
                    nfa.eps[self.ws_frag(frag[1])].append(loop)
        for count, st in enumerate(positions):
            if count >= lo:
                nfa.eps[self.lit(st, b"]")].append(e)
        return s, e


@functools.lru_cache(maxsize=256)
def _regex_fsm(pattern: str) -> Any:
    """interegular's DFA for a regex (cached: formats and repeated patterns parse once per process)."""
    import interegular

    return interegular.parse_pattern(pattern).to_fsm()


_ANY_SCHEMA = {"anyOf": [
    {"type": "object", "additionalProperties": {"$ref": "#any"}},
    {"type": "array", "items": {"$ref": "#any"}},
    {"type": ["string", "number", "boolean", "null"]},
]}


def _canonical_text(name: str) -> bytes:
    return _json_text(name)[1:-1]


def _at_char_boundary(prefix: bytes) -> bool:
    """True if canonical string content ``prefix`` ends between characters."""
    i = 0
    while i < len(prefix):
        b = prefix[i]
        if b == 0x5C:
            n = 6 if i + 1 < len(prefix) and prefix[i + 1] == ord("u") else 2
        elif b < 0x80:
            n = 1
        elif b >= 0xF0:
            n = 4
        elif b >= 0xE0:
            n = 3
        else:
            n = 2
        if i + n > len(prefix):
            return False
        i += n
    return True


def _completions(prefix: bytes) -> list[list[tuple[int, int]]]:
    """Byte-range paths that finish the partial character at the end of canonical ``prefix``."""
    i = 0
    while True:
        b = prefix[i]
        n = (6 if len(prefix) > i + 1 and prefix[i + 1] == ord("u") else 2) if b == 0x5C else (
            1 if b < 0x80 else 4 if b >= 0xF0 else 3 if b >= 0xE0 else 2)
        if i + n > len(prefix):
            break
        i += n
    part = prefix[i:]
    if part[0] == 0x5C:
        options = [_canonical(chr(o)) for o in range(0x80) if len(_canonical(chr(o))) > 1]
        return [[(x, x) for x in o[len(part):]] for o in options if o.startswith(part)]
    out = []
    for path in _utf8_multibyte_paths():
        if len(path) > len(part) and all(lo <= part[k] <= hi for k, (lo, hi) in enumerate(path[: len(part)])):
            out.append(path[len(part):])
    return out


def _ranges(values: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for v in values:
        if out and out[-1][1] + 1 == v:
            out[-1] = (out[-1][0], v)
        elif not out or out[-1][1] != v:
            out.append((v, v))
    return out


def _bounds(schema: dict, path: str):
    lo = hi = None
    lo_key = hi_key = ""
    if "minimum" in schema:
        lo, lo_key = (float(schema["minimum"]), schema.get("exclusiveMinimum") is True), "minimum"
    if "maximum" in schema:
        hi, hi_key = (float(schema["maximum"]), schema.get("exclusiveMaximum") is True), "maximum"
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        v = schema.get(key)
        if isinstance(v, bool) or v is None:
            continue
        if key == "exclusiveMinimum" and (lo is None or v >= lo[0]):
            lo, lo_key = (float(v), True), key
        if key == "exclusiveMaximum" and (hi is None or v <= hi[0]):
            hi, hi_key = (float(v), True), key
    for bound, key in ((lo, lo_key), (hi, hi_key)):
        if bound is not None and not math.isfinite(bound[0]):
            raise UnsupportedSchemaError(key, path, "bound must be finite")
    return lo, hi, lo_key, hi_key


def _type_set(schema: dict, path: str) -> list[str]:
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


def _value_type_ok(v: Any, types: list[str]) -> bool:
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


def _json_equal(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, float)) and isinstance(b, (int, float))
        and not isinstance(a, bool) and not isinstance(b, bool) and a == b)


_MERGE_MIN = ("minLength", "minItems", "minimum", "exclusiveMinimum")
_MERGE_MAX = ("maxLength", "maxItems", "maximum", "exclusiveMaximum")


def _merge(a: Any, b: Any, path: str, comp: _Compiler) -> Any:
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
    if "$ref" in a and "$ref" not in b:
        a, b = b, a
    if "$ref" in b:
        rest = {k: v for k, v in b.items() if k != "$ref"}
        return _merge(a, _merge(comp.resolve(b["$ref"], path), rest, path, comp), path, comp)
    for side in (a, b):
        for key in ("anyOf", "oneOf"):
            if key in side:
                other = b if side is a else a
                rest = {k: v for k, v in side.items() if k != key}
                base = _merge(rest, other, path, comp)
                if key == "oneOf":
                    return {"oneOf": [_merge(base, alt, path, comp) for alt in side[key]]}
                return {"anyOf": [_merge(base, alt, path, comp) for alt in side[key]]}
        if "allOf" in side:
            other = b if side is a else a
            merged = {k: v for k, v in side.items() if k != "allOf"}
            for sub in side["allOf"]:
                merged = _merge(merged, sub, path, comp)
            return _merge(merged, other, path, comp)
    out = dict(a)
    for key, v in b.items():
        if key not in out:
            out[key] = v
        elif key in ANNOTATIONS or out[key] == v:
            continue
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
            out[key] = [x for x in out[key] if any(_json_equal(x, y) for y in v)]
        elif key in ("properties", "additionalProperties"):
            continue  # handled below
        else:
            raise UnsupportedSchemaError("allOf", path, f"cannot intersect two different {key!r}")
    if "properties" in a or "properties" in b or "additionalProperties" in a or "additionalProperties" in b:
        pa, pb = a.get("properties", {}), b.get("properties", {})
        xa = a.get("additionalProperties", True)
        xb = b.get("additionalProperties", True)
        props = {}
        for name in list(dict.fromkeys([*pa, *pb])):
            sa = pa.get(name, xa)
            sb = pb.get(name, xb)
            props[name] = _merge(sa, sb, f"{path}/properties/{name}", comp)
        out["properties"] = props
        out["additionalProperties"] = _merge(xa, xb, f"{path}/additionalProperties", comp)
    return out


def _types_of(schema: Any, comp: _Compiler, path: str, depth: int = 0) -> set[str] | None:
    if depth > 8 or not isinstance(schema, dict):
        return None
    if "$ref" in schema and len(schema) == 1:
        return _types_of(comp.resolve(schema["$ref"], path), comp, path, depth + 1)
    if "const" in schema:
        values = [schema["const"]]
    elif "enum" in schema:
        values = schema["enum"]
    else:
        values = None
    if values is not None:
        return {_value_kind(v) for v in values}
    if "type" in schema:
        types = {schema["type"]} if isinstance(schema["type"], str) else set(schema["type"])
        return {"number" if t == "integer" else t for t in types}
    return None


def _value_kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}[type(v)]


def _discriminator(schema: Any, comp: _Compiler, path: str) -> dict[str, str]:
    """Required properties of an object schema pinned by ``const`` -> their JSON text."""
    if isinstance(schema, dict) and "$ref" in schema:
        schema = comp.resolve(schema["$ref"], path)
    if not isinstance(schema, dict):
        return {}
    out = {}
    for name, sub in schema.get("properties", {}).items():
        if name in schema.get("required", []) and isinstance(sub, dict) and "const" in sub:
            out[name] = _json_text(sub["const"]).decode()
    return out


def _pairwise_disjoint(alts: list[Any], comp: _Compiler, path: str) -> bool:
    types = [_types_of(a, comp, path) for a in alts]
    discs = [_discriminator(a, comp, path) for a in alts]
    for i in range(len(alts)):
        for j in range(i + 1, len(alts)):
            if types[i] is not None and types[j] is not None and not (types[i] & types[j]):
                continue
            if any(k in discs[j] and discs[j][k] != v for k, v in discs[i].items()):
                continue
            return False
    return True


# ---------------------------------------------------------------------------------- determinisation
def _closure(nfa: _Nfa, states: frozenset[int] | set[int]) -> frozenset[int]:
    out = set(states)
    todo = list(states)
    while todo:
        s = todo.pop()
        for t in nfa.eps[s]:
            if t not in out:
                out.add(t)
                todo.append(t)
    return frozenset(out)


def _determinise(comp: _Compiler, max_states: int) -> Automaton:
    """Subset construction per rule; all rules' DFA states share one table. ~5-15 us per DFA state."""
    nfa = comp.nfa
    ids: dict[frozenset[int], int] = {}
    order: list[frozenset[int]] = []
    rule_final: list[int] = []
    closures: dict[int, frozenset[int]] = {}

    def closure1(state: int) -> frozenset[int]:
        c = closures.get(state)
        if c is None:
            c = closures[state] = _closure(nfa, (state,)) if nfa.eps[state] else frozenset((state,))
        return c

    def dfa_id(members: frozenset[int], final_nfa: int) -> int:
        q = ids.get(members)
        if q is None:
            if len(order) >= max_states:
                raise GrammarTooLargeError(f"schema needs more than {max_states} automaton states")
            q = ids[members] = len(order)
            order.append(members)
            rule_final.append(final_nfa)
            pending.append(q)
        return q

    cap = 256
    trans_buf = np.full((cap, 256), -1, dtype=np.int32)
    flags_buf = np.zeros((cap, 256), dtype=np.uint8)
    calls: dict[int, tuple[str, int]] = {}
    segs: list[tuple[int, int] | None] = []
    finals: list[bool] = []
    rule_start: dict[str, int] = {}
    pending: list[int] = []
    done = 0
    for built, key in enumerate(comp.rule_keys):
        s, e = comp.rule_frags[built]
        rule_start[key] = dfa_id(closure1(s), e)
        while pending:
            comp.tick()
            q = pending.pop()
            if q >= cap:
                cap = max(cap * 2, q + 1)
                trans_buf = np.concatenate([trans_buf, np.full((cap - trans_buf.shape[0], 256), -1, np.int32)])
                flags_buf = np.concatenate([flags_buf, np.zeros((cap - flags_buf.shape[0], 256), np.uint8)])
            done += 1
            members = order[q]
            final_nfa = rule_final[q]
            row = trans_buf[q]
            frow = flags_buf[q]
            while len(finals) <= q:
                finals.append(False)
                segs.append(None)
            if len(members) == 1:  # fast path: a lone NFA state with one byte edge (literal text)
                (m,) = members
                one = nfa.edges[m]
                if len(one) == 1 and one[0][0] == one[0][1] and not nfa.calls[m]:
                    byte, _, t, f = one[0]
                    row[byte] = dfa_id(closure1(t), final_nfa)
                    frow[byte] = f
                    finals[q] = m == final_nfa
                    segs[q] = nfa.seg[m]
                    continue
            edges = [edge for m in members for edge in nfa.edges[m]] if len(members) > 1 else nfa.edges[next(iter(members))]
            edges = sorted(edges)
            disjoint = all(edges[i][1] < edges[i + 1][0] for i in range(len(edges) - 1))
            if disjoint:  # the common case: one target per byte range
                for lo, hi, t, f in edges:
                    row[lo:hi + 1] = dfa_id(closure1(t), final_nfa)
                    if f:
                        frow[lo:hi + 1] = f
            else:
                points = sorted({lo for lo, _, _, _ in edges} | {hi + 1 for _, hi, _, _ in edges})
                for a, b in itertools.pairwise(points):
                    targets = set()
                    flag_set = set()
                    for lo, hi, t, f in edges:
                        if lo <= a <= hi:
                            targets.update(closure1(t))
                            flag_set.add(f)
                    if not targets:
                        continue
                    if len(flag_set) > 1:
                        raise UnsupportedSchemaError(
                            "maxLength", "#", "alternatives overlap with different string length bounds")
                    row[a:b] = dfa_id(frozenset(targets), final_nfa)
                    frow[a:b] = flag_set.pop()
            finals[q] = final_nfa in members
            seg_set = {nfa.seg[m] for m in members if nfa.edges[m]}
            if len(seg_set) > 1:
                raise UnsupportedSchemaError(
                    "maxLength" if any(sg and sg[1] < UNBOUNDED for sg in seg_set if sg) else "minLength", "#",
                    "overlapping alternatives with different string length bounds")
            segs[q] = next(iter(seg_set)) if seg_set else None
            call_set = {c for m in members for c in nfa.calls[m]} if any(nfa.calls[m] for m in members) else ()
            if len(call_set) > 1:
                raise UnsupportedSchemaError("$ref", "#", "ambiguous recursive alternatives")
            if call_set:
                callee, ret = call_set.pop()
                calls[q] = (callee, dfa_id(closure1(ret), final_nfa))
    n = len(order)
    trans = np.ascontiguousarray(trans_buf[:n])
    flags = np.ascontiguousarray(flags_buf[:n])
    call_start = np.full(n, -1, dtype=np.int32)
    call_ret = np.full(n, -1, dtype=np.int32)
    for q, (callee, ret_q) in calls.items():
        cs = rule_start[callee]
        if trans[cs].max() < 0:
            raise UnsupportedSchemaError("$ref", callee, "left-recursive reference")
        if np.any((trans[cs] >= 0) & (trans[q] >= 0)):
            raise UnsupportedSchemaError("$ref", callee, "recursive reference overlaps an alternative")
        call_start[q] = cs
        call_ret[q] = ret_q
    cmin = np.asarray([sg[0] if sg else 0 for sg in segs], dtype=np.int32)
    cmax = np.asarray([sg[1] if sg else UNBOUNDED for sg in segs], dtype=np.int32)
    counted = np.asarray([sg is not None for sg in segs], dtype=bool)
    plain = _plain_loops(trans, flags, counted)
    loops = (trans == np.arange(n, dtype=np.int32)[:, None]) & (flags == 0)
    loop_bits = np.zeros((n, 5), dtype=np.uint64)
    loop_bits[:, :4] = np.packbits(loops, axis=1, bitorder="little").view(np.uint64)
    loop_bits[:, 4] = loops.any(axis=1)
    free = np.zeros(n, dtype=bool)
    for q, members in enumerate(order):
        if len(members) == 1 and next(iter(members)) in nfa.free_bodies:
            free[q] = True
    free &= plain
    return Automaton(trans, flags, np.asarray(finals, dtype=bool), call_start, call_ret, cmin, cmax, plain,
                     loop_bits, free, counted, rule_start[comp.rule_keys[0]])


def _plain_loops(trans: np.ndarray, flags: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """Per state: every plain string character (ASCII or whole UTF-8) leads back to it, counted once.

    Vectorised over states. A byte range must go to a single state with a single flag value; anything else
    counts as "not a plain loop", which only costs the fast path, never correctness.
    """
    result = np.zeros(trans.shape[0], dtype=bool)
    rows = np.flatnonzero(trans[:, 0x61] == np.arange(trans.shape[0]))  # candidates: 'a' loops
    n = rows.shape[0]
    if n == 0:
        return result
    inc = np.where(counted[rows], INC, 0).astype(np.uint8)
    room = np.where(counted[rows], ROOM, 0).astype(np.uint8)
    t_rows = trans[rows]
    # string states never take a raw control byte or a byte that cannot start a UTF-8 character
    ok = (t_rows[:, :0x20].max(axis=1) < 0) & (t_rows[:, 0x80:0xC2].max(axis=1) < 0) & (t_rows[:, 0xF5:].max(axis=1) < 0)
    for path in [[r] for r in PLAIN_ASCII] + _utf8_multibyte_paths():
        cur = rows.copy()
        for i, (lo, hi) in enumerate(path):
            want = inc if i == len(path) - 1 else (room if i == 0 else np.zeros(n, np.uint8))
            src = np.where(cur >= 0, cur, 0)
            t = trans[src, lo:hi + 1]
            f = flags[src, lo:hi + 1]
            tmin = t.min(axis=1)
            ok &= (cur >= 0) & (tmin == t.max(axis=1)) & (tmin >= 0) & (f.min(axis=1) == want) & (f.max(axis=1) == want)
            cur = np.where(ok, tmin, -1)
        ok &= cur == rows
    result[rows] = ok
    return result


def compile_schema_automaton(schema: Any, *, whitespace: int = 0, max_states: int = 200_000,
                             deadline_s: float = 5.0) -> Automaton:
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
    comp = _Compiler(schema, whitespace, max_states, deadline_s)
    comp.rule("#")
    i = 0
    while i < len(comp.rule_keys):
        key = comp.rule_keys[i]
        target = schema if key == "#" else comp.resolve(key, key)
        frag = comp.frag(target, key, (key,))
        if frag is None:
            raise GrammarError(f"schema at {key} accepts no JSON value")
        comp.rule_frags[i] = frag
        i += 1
    return _determinise(comp, max_states)
