"""JSON strings at the byte level: canonical escapes, and the NFA fragments for string bodies and keys.

``json.dumps(..., ensure_ascii=False)`` is the canonical form: the text of ``const``/``enum`` values and
known property names, and what a pattern's characters must look like (:mod:`.schema_regex`). A free
string (no pattern) accepts *any* escape form; a property key that must differ from the known names is
built as a byte trie of those names that drops into a free canonical-string loop when it leaves the trie.

Cost: build time only (pure Python), a few NFA states per call; no per-token work. Not thread-safe on a
shared :class:`~.schema_automaton.Nfa`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .automaton import INC, PLAIN_ASCII, ROOM, Nfa, utf8_multibyte_paths

__all__ = [
    "ASCII_CANONICAL",
    "HEX",
    "at_char_boundary",
    "byte_ranges",
    "canonical",
    "canonical_any_loop",
    "canonical_text",
    "free_string_body",
    "json_text",
    "multibyte_char_edges",
    "property_key_frag",
]

HEX = [(0x30, 0x39), (0x41, 0x46), (0x61, 0x66)]


ASCII_CANONICAL = [json.dumps(chr(o))[1:-1].encode("ascii") for o in range(0x80)]


def canonical(ch: str) -> bytes:
    """The one encoding of ``ch`` inside a JSON string that ``json.dumps(ensure_ascii=False)`` writes."""
    if ord(ch) < 0x80:
        return ASCII_CANONICAL[ord(ch)]
    return json.dumps(ch, ensure_ascii=False)[1:-1].encode("utf-8")


_ESCAPED = re.compile(r'[\x00-\x1f"\\]')  # the characters json.dumps(ensure_ascii=False) escapes in a string


def json_text(value: Any) -> bytes:
    """Compact canonical JSON text of ``value`` as UTF-8 (the bytes a ``const``/``enum`` must match)."""
    if type(value) is str and not _ESCAPED.search(value):  # most names and values: no escape, skip json.dumps
        return b'"' + value.encode("utf-8") + b'"'
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def canonical_text(name: str) -> bytes:
    """The canonical content of the JSON string ``name``, without its quotes."""
    if not _ESCAPED.search(name):
        return name.encode("utf-8")
    return json_text(name)[1:-1]


def at_char_boundary(prefix: bytes) -> bool:
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
        options = [canonical(chr(o)) for o in range(0x80) if len(canonical(chr(o))) > 1]
        return [[(x, x) for x in o[len(part):]] for o in options if o.startswith(part)]
    out = []
    for path in utf8_multibyte_paths():
        if len(path) > len(part) and all(lo <= part[k] <= hi for k, (lo, hi) in enumerate(path[: len(part)])):
            out.append(path[len(part):])
    return out


def multibyte_char_edges(nfa: Nfa, src: int, target: int, seg: tuple[int, int] | None, inc: int) -> None:
    """Edges ``src`` -> ``target`` for every multi-byte UTF-8 character: room for one more character checked
    on the first byte, the length counter moved (``inc``) on the last. The inner states are the minimal
    UTF-8 automaton (7 states: "n continuation bytes left", and the four lead bytes with a narrower second
    byte), shared by all paths, rather than a fresh chain per path (18 states)."""
    first = ROOM if seg else 0
    need1, need2, need3 = nfa.state(seg), nfa.state(seg), nfa.state(seg)
    nfa.edge(need1, 0x80, 0xBF, target, inc)
    nfa.edge(need2, 0x80, 0xBF, need1)
    nfa.edge(need3, 0x80, 0xBF, need2)
    nfa.edge(src, 0xC2, 0xDF, need1, first)
    for lead, (lo, hi), nxt in ((0xE0, (0xA0, 0xBF), need1), (0xED, (0x80, 0x9F), need1),
                                (0xF0, (0x90, 0xBF), need2), (0xF4, (0x80, 0x8F), need2)):
        narrow = nfa.state(seg)
        nfa.edge(src, lead, lead, narrow, first)
        nfa.edge(narrow, lo, hi, nxt)
    nfa.edge(src, 0xE1, 0xEC, need2, first)
    nfa.edge(src, 0xEE, 0xEF, need2, first)
    nfa.edge(src, 0xF1, 0xF3, need3, first)


def byte_ranges(values: list[int]) -> list[tuple[int, int]]:
    """Sorted byte values -> inclusive ``(lo, hi)`` runs (duplicates collapse)."""
    out: list[tuple[int, int]] = []
    for v in values:
        if out and out[-1][1] + 1 == v:
            out[-1] = (out[-1][0], v)
        elif not out or out[-1][1] != v:
            out.append((v, v))
    return out


def property_key_frag(nfa: Nfa, a: int, excluded: list[str]) -> int:
    """A quoted property name that is none of ``excluded`` (canonical escapes only)."""
    body = nfa.state()
    nfa.edge(a, 0x22, 0x22, body)
    end = nfa.state()
    if not excluded:
        free = canonical_any_loop(nfa, body, None)
        nfa.edge(free, 0x22, 0x22, end)
        return end
    # a byte trie of the excluded names; leaving the trie drops into a free canonical-string loop
    free = nfa.state()
    loop, shape, rel = _free_key_loop(nfa, free)  # one character's first byte: shared by every trie node that
    nfa.edge(free, 0x22, 0x22, end)  # leaves the trie
    names = {canonical_text(k) for k in excluded}
    children: dict[bytes, set[int]] = {}  # trie node -> the bytes of its children (one pass over the names)
    for name in names:
        for i in range(len(name)):
            children.setdefault(name[:i], set()).add(name[i])
        children.setdefault(name, set())
    order = sorted(children, key=lambda p: (len(p), p))
    steps: dict[frozenset[int], list[int]] = {}  # taken bytes -> the node's free edges (flat, source 0)
    edges = nfa.edges
    plain = all(name.isascii() and 0x5C not in name for name in names)
    if plain:  # every node ends between characters: the nodes are made in ``order``, so numbered up front
        base = nfa.num_states - 1
        nfa.states(len(order) - 1)
        trie = {prefix: base + i for i, prefix in enumerate(order)}
        trie[b""] = body
    else:
        trie = {b"": body}
    for prefix in order:
        st = trie[prefix]
        taken = children[prefix]
        if plain:
            for byte in sorted(taken):
                edges += (st, byte, byte, trie[prefix + bytes((byte,))], 0)
            boundary = True
        else:
            for byte in sorted(taken):
                child = trie[prefix + bytes((byte,))] = nfa.state()
                edges += (st, byte, byte, child, 0)
            boundary = (prefix.isascii() and 0x5C not in prefix) or at_char_boundary(prefix)
        if prefix not in names and boundary:
            edges += (st, 0x22, 0x22, end, 0)
        if boundary:
            # ``first`` less the trie's next letters: the free loop's inner states are shared by every trie node
            # (one copy per key in the DFA, not one per node), and nodes with the same next letters share edges
            key = frozenset(taken)
            flat = steps.get(key)
            if flat is None:
                flat = steps[key] = _key_step(loop, shape, rel, key)[:]
                flat[3::5] = [free + r for r in flat[3::5]]
            if flat:  # the same edges from this node: a copy with its source filled in (no per-edge Python)
                chunk = flat[:]
                chunk[0::5] = [st] * (len(flat) // 5)
                edges += chunk
        else:
            _finish_char_except(nfa, st, prefix, taken, free)
    return end


_FREE_LOOP: list = []  # [(states, flat edges relative to the loop state, loop id, shape, rel)], built once


def _free_key_loop(nfa: Nfa, free: int) -> tuple[int, tuple, tuple]:
    """``canonical_any_loop(nfa, free, free)`` (unbounded: no segment, no flags) stamped from a copy recorded
    once per process; ``free`` must be the newest state. Returns the loop's shape id and its first-byte edges
    (byte ranges, and (target relative to ``free``, flags) each)."""
    if not _FREE_LOOP:
        scratch = Nfa(1 << 20)
        scratch.state()
        canonical_any_loop(scratch, 0, 0)
        first = scratch.edges_of(0)
        shape = tuple((lo, hi) for lo, hi, _, _ in first)
        rel = tuple((b, f) for _, _, b, f in first)
        assert scratch.seg_ids == [0] * scratch.num_states and not scratch.eps
        _FREE_LOOP.append((scratch.num_states - 1, scratch.edges[:],
                           _LOOP_SHAPES.setdefault((shape, rel), len(_LOOP_SHAPES)), shape, rel))
    states, flat, loop, shape, rel = _FREE_LOOP[0]
    assert free == nfa.num_states - 1
    nfa.states(states)
    chunk = flat[:]
    chunk[0::5] = [free + a for a in flat[0::5]]
    chunk[3::5] = [free + b for b in flat[3::5]]
    nfa.edges += chunk
    return loop, shape, rel


def _finish_char_except(nfa: Nfa, st: int, prefix: bytes, taken: set[int], free: int) -> None:
    """From a trie node inside a character (UTF-8 or an escape), every way to finish it that the trie does not
    take leads into ``free``."""
    for path in _completions(prefix):
        first = byte_ranges([x for x in range(path[0][0], path[0][1] + 1) if x not in taken])
        cur = st
        for i, ranges in enumerate([first] + [[r] for r in path[1:]]):
            nxt = free if i == len(path) - 1 else nfa.state()
            for lo, hi in ranges:
                nfa.edge(cur, lo, hi, nxt)
            cur = nxt


_LOOP_SHAPES: dict[tuple, int] = {}  # (edge ranges, relative targets and flags) of the free key loop -> an id
_KEY_STEPS: dict[tuple[int, frozenset[int]], list[int]] = {}  # (loop shape id, taken bytes) -> flat edges


def _key_step(loop: int, shape: tuple[tuple[int, int], ...], rel: tuple[tuple[int, int], ...],
              taken: frozenset[int]) -> list[int]:
    """A key-trie node's edges into the free key loop: the loop's first-byte edges (byte ranges ``shape``,
    ``rel``: (target relative to the loop state, flags) each) less the bytes ``taken`` by the trie, split into
    runs, as a flat ``0, lo, hi, relative target, flags`` list (the caller fills in the source and offsets
    the targets). Cached per process: every open object's key trie asks for the same few (its nodes' next
    letters); read-only for callers."""
    key = (loop, taken)  # ``loop``: the id of (shape, rel) in _LOOP_SHAPES
    flat = _KEY_STEPS.get(key)
    if flat is None:
        if len(_KEY_STEPS) >= 8192:
            _KEY_STEPS.clear()
        flat = _KEY_STEPS[key] = [x for i, (lo, hi) in enumerate(shape) for rlo, rhi in _ranges_without(lo, hi, taken)
                                  for x in (0, rlo, rhi, rel[i][0], rel[i][1])]
    return flat


def _ranges_without(lo: int, hi: int, taken: set[int]) -> list[tuple[int, int]]:
    """``lo..hi`` minus the bytes in ``taken``, as inclusive runs (one edge per run, not per byte)."""
    if not any(lo <= t <= hi for t in taken):
        return [(lo, hi)]
    return byte_ranges([x for x in range(lo, hi + 1) if x not in taken])


def canonical_any_loop(nfa: Nfa, a: int, back: int | None, ascii_plain: bool = True,
                       seg: tuple[int, int] | None = None) -> int:
    """Edges for one canonical JSON-string character from ``a`` to ``back`` (a loop when equal)."""
    if back is None:
        back = a
    inc = INC if seg else 0
    if ascii_plain:
        for lo, hi in PLAIN_ASCII:
            nfa.edge(a, lo, hi, back, inc)
    multibyte_char_edges(nfa, a, back, seg, inc)
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


def free_string_body(nfa: Nfa, body: int, seg: tuple[int, int] | None) -> None:
    """Any JSON string content (any escape form), looping on ``body``."""
    nfa.free_bodies.add(body)
    inc = INC if seg else 0
    for lo, hi in PLAIN_ASCII:
        nfa.edge(body, lo, hi, body, inc)
    multibyte_char_edges(nfa, body, body, seg, inc)
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
