"""The compile-time shortcuts build exactly what the plain construction builds.

Each shortcut (CSR rows in numba, per-process tables and templates, lazy JSON pointers in ``localize_refs``)
is compared with a straightforward construction written here, on inputs chosen to reach its edge cases.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest
from realizar_ort.kernels.automaton_summary import paths_array
from realizar_ort.kernels.subset_construction import csr_rows

from realizar_ort.grammar import compiler, strings
from realizar_ort.grammar.automaton import INC, PLAIN_ASCII, ROOM, Nfa, utf8_multibyte_paths
from realizar_ort.grammar.errors import GrammarError, GrammarTooLargeError
from realizar_ort.grammar.refs import localize_refs


# ------------------------------------------------------------------------------------------ csr_rows
@pytest.mark.parametrize("n, runs, width", [(1, 0, 1), (5, 1, 4), (50, 400, 4), (300, 37, 2), (7, 60, 1)])
def test_csr_rows_is_a_stable_grouping_by_state(n, runs, width):
    rng = np.random.default_rng(n * 1000 + runs)
    flat = np.empty((runs, width + 1), dtype=np.int32)
    flat[:, 0] = rng.integers(0, n, runs)
    flat[:, 1:] = rng.integers(-5, 1000, (runs, width))
    ptr, cols = csr_rows(flat.ravel().copy(), n, width)
    # reference: numpy's stable argsort by state, row pointers from the counts
    order = np.argsort(flat[:, 0], kind="stable")
    want_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat[:, 0], minlength=n), out=want_ptr[1:])
    assert ptr.tolist() == want_ptr.tolist()
    assert cols.shape == (width, runs)
    assert cols.T.tolist() == flat[order, 1:].tolist()
    for c in range(width):
        assert cols[c].flags.c_contiguous


# ---------------------------------------------------------------------------------------- paths_array
def _paths_array_fresh(paths):
    arr = np.zeros((len(paths), 4, 2), dtype=np.int32)
    lens = np.zeros(len(paths), dtype=np.int32)
    for p, path in enumerate(paths):
        lens[p] = len(path)
        for i, (lo, hi) in enumerate(path):
            arr[p, i] = (lo, hi)
    return arr, lens


def test_paths_array_cache_returns_each_list_its_own_arrays():
    plain = [[r] for r in PLAIN_ASCII] + utf8_multibyte_paths()
    other = [[(0x41, 0x5A)], [(0xC2, 0xDF), (0x80, 0xBF)]]
    for paths in (plain, other, plain, other):  # second round: from the cache
        arr, lens = paths_array(paths)
        want_arr, want_lens = _paths_array_fresh(paths)
        assert np.array_equal(arr, want_arr) and np.array_equal(lens, want_lens)
    assert paths_array(plain)[0] is paths_array([list(p) for p in plain])[0]  # equal lists share one entry


# ------------------------------------------------------------------------------------ Nfa segments
def test_nfa_segments_and_literal_chains_match_state_by_state_building():
    fast, slow = Nfa(10_000), Nfa(10_000)
    for nfa in (fast, slow):
        nfa.state()
    fast_end = fast.literal(0, b"ab\xc3\xa9", (2, 5), last_flags=INC)
    a = 0
    for i, byte in enumerate(b"ab\xc3\xa9"):  # the plain construction: one state and one edge per byte
        b = slow.state((2, 5))
        slow.edge(a, byte, byte, b, INC if i == 3 else 0)
        a = b
    assert fast_end == a
    assert fast.literal(fast_end, b"") == fast_end
    fast.state((0, 3))
    fast.state((2, 5))
    fast.state()
    slow.state((0, 3))
    slow.state((2, 5))
    slow.state()
    assert fast.edges == slow.edges
    assert fast.seg == slow.seg == [None, (2, 5), (2, 5), (2, 5), (2, 5), (0, 3), (2, 5), None]
    assert fast.segments == [None, (2, 5), (0, 3)]  # distinct segments stored once


def test_literal_chain_respects_the_state_budget_exactly():
    nfa = Nfa(5)
    nfa.state()
    assert nfa.literal(0, b"abcd") == 4  # 5 states: the budget exactly
    with pytest.raises(GrammarTooLargeError):
        nfa.literal(4, b"e")
    nfa = Nfa(5)
    nfa.state()
    with pytest.raises(GrammarTooLargeError):
        nfa.literal(0, b"abcde")


# -------------------------------------------------------------------------------- property-key tries
def _property_key_frag_plain(nfa: Nfa, a: int, excluded: list[str]) -> int:
    """The key trie built edge by edge (what ``property_key_frag`` built before its flat templates)."""
    body = nfa.state()
    nfa.edge(a, 0x22, 0x22, body)
    end = nfa.state()
    if not excluded:
        free = strings.canonical_any_loop(nfa, body, None)
        nfa.edge(free, 0x22, 0x22, end)
        return end
    free = nfa.state()
    mark = len(nfa.edges)
    strings.canonical_any_loop(nfa, free, free)
    first = nfa.edges_of(free, mark)
    nfa.edge(free, 0x22, 0x22, end)
    names = {strings.canonical_text(k) for k in excluded}
    children: dict[bytes, set[int]] = {}
    for name in names:
        for i in range(len(name)):
            children.setdefault(name[:i], set()).add(name[i])
        children.setdefault(name, set())
    trie = {b"": body}
    for prefix in sorted(children, key=lambda p: (len(p), p)):
        st = trie[prefix]
        taken = children[prefix]
        for byte in sorted(taken):
            trie[prefix + bytes([byte])] = nfa.state()
            nfa.edge(st, byte, byte, trie[prefix + bytes([byte])])
        boundary = (prefix.isascii() and 0x5C not in prefix) or strings.at_char_boundary(prefix)
        if prefix not in names and boundary:
            nfa.edge(st, 0x22, 0x22, end)
        if boundary:
            for lo, hi, b, f in first:
                for x in range(lo, hi + 1):  # byte by byte, then merged into runs below
                    if x not in taken:
                        nfa.edge(st, x, x, b, f)
        else:
            strings._finish_char_except(nfa, st, prefix, taken, free)
    return end


def _merged(edges: list[int]) -> list[tuple[int, int, int, int, int]]:
    """Edges as (source, lo, hi, target, flags) with adjacent bytes of one source/target/flags merged, in order."""
    out: list[list[int]] = []
    for i in range(0, len(edges), 5):
        a, lo, hi, b, f = edges[i:i + 5]
        if out and out[-1][0] == a and out[-1][3] == b and out[-1][4] == f and out[-1][2] + 1 == lo:
            out[-1][2] = hi
        else:
            out.append([a, lo, hi, b, f])
    return [tuple(e) for e in out]


KEY_SETS = [
    [],
    ["a"],
    ["name", "description", "value", "type"],
    ["ab", "abc", "b"],
    ["é", "日本", "a\u00e9b", "\U0001F600x"],  # multi-byte characters: trie nodes inside a character
    ["a\"b", "c\\d", "tab\t", "nl\n", "\u0001"],  # escapes: trie nodes inside an escape
    ["", "x"],
    ["~", "/", "%41", " "],
]


@pytest.mark.parametrize("names", KEY_SETS)
def test_property_key_frag_matches_the_edge_by_edge_trie(names):
    for _ in range(2):  # the second build comes from the per-process templates
        fast, slow = Nfa(100_000), Nfa(100_000)
        for nfa in (fast, slow):
            nfa.state()
        strings.property_key_frag(fast, 0, names)
        _property_key_frag_plain(slow, 0, names)
        assert fast.num_states == slow.num_states
        assert fast.eps == slow.eps
        assert _merged(fast.edges) == _merged(slow.edges)


def test_property_key_frag_edges_are_the_same_with_other_tries_in_between():
    """Templates are stored with targets relative to the free loop: a trie built after others (different
    state numbers) gets the same edges, shifted."""
    first = Nfa(100_000)
    first.state()
    strings.property_key_frag(first, 0, ["name", "value"])
    later = Nfa(100_000)
    for _ in range(37):
        later.state()
    strings.property_key_frag(later, 36, ["zzz", "name"])
    start = len(later.edges)
    base = later.num_states
    strings.property_key_frag(later, 36, ["name", "value"])
    shift = base - 1  # ``first`` built its trie from state 1, ``later`` from ``base``
    got = later.edges[start:]
    want = []
    for i in range(0, len(first.edges), 5):
        a, lo, hi, b, f = first.edges[i:i + 5]
        want += [36 if a == 0 else a + shift, lo, hi, b + shift, f]
    assert got == want


def test_key_steps_flags_stay_those_of_the_loop():
    nfa = Nfa(10_000)
    nfa.state()
    strings.property_key_frag(nfa, 0, ["x"])
    flags = {nfa.edges[i + 4] for i in range(0, len(nfa.edges), 5)}
    assert flags <= {0}, flags  # an unbounded key: no counter flags
    assert ROOM not in flags and INC not in flags


# ------------------------------------------------------------------------------------- localize_refs
def _segment(key: str) -> str:
    import urllib.parse
    return urllib.parse.quote(key.replace("~", "~0").replace("/", "~1"), safe="~!$&'()*+,;=:@")


def test_localize_refs_pointers_and_sharing():
    leaf = {"type": "integer", "enum": [1, 2]}
    schema = {
        "$id": "http://example.com/root.json",
        "properties": {
            "a/b ~c%": {"$id": "inner.json", "$defs": {"x y": {"$anchor": "here", "type": "string"}},
                        "$ref": "#/$defs/x%20y"},
            "list": {"items": [leaf, {"$id": "third.json", "type": "null"}]},
            "use": {"$ref": "inner.json#here"},
            "use2": {"$ref": "third.json"},
            "plain": {"type": "object", "properties": {"q": leaf}},
        },
        "enum_holder": {"enum": [{"$ref": "#/not/walked"}]},
    }
    before = copy.deepcopy(schema)
    out = localize_refs(schema)
    assert schema == before  # the input is not changed
    inner = "#/properties/" + _segment("a/b ~c%")
    assert out["properties"]["a/b ~c%"]["$ref"] == inner + "/$defs/x%20y"
    assert out["properties"]["use"]["$ref"] == inner + "/$defs/" + _segment("x y")
    assert out["properties"]["use2"]["$ref"] == "#/properties/list/items/1"
    assert "$id" not in out and "$anchor" not in json.dumps(out) and '"$id"' not in json.dumps(out)
    # subtrees with nothing to rewrite are shared, the rest are copies
    assert out["properties"]["plain"] is schema["properties"]["plain"]
    assert out["properties"]["list"]["items"][0] is leaf
    assert out["enum_holder"] is schema["enum_holder"]
    assert out["properties"] is not schema["properties"]
    # and the compiler resolves the rewritten pointers
    assert compiler.compile_schema_automaton(out).num_states > 0


def test_localize_refs_without_ids_returns_the_schema_itself():
    schema = {"$defs": {"a": {"type": "integer"}}, "$ref": "#/$defs/a"}
    assert localize_refs(schema) is schema


# ---------------------------------------------------------------------------------- canonical string text
def test_json_text_shortcut_matches_json_dumps_on_every_character_class():
    chars = [chr(o) for o in list(range(0x800)) + [0xFFFF, 0x10FFFF, 0x2028, 0x2029, 0xFEFF, 0x1F600]]
    for c in chars:
        for text in (c, "a" + c + "b", c * 3):
            want = json.dumps(text, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            assert strings.json_text(text) == want, hex(ord(c))
            assert strings.canonical_text(text) == want[1:-1], hex(ord(c))
    for lone in ("\ud800", "a\udfffb"):
        for fn in (strings.json_text, strings.canonical_text):
            with pytest.raises(UnicodeEncodeError):
                fn(lone)
    assert strings.json_text(["x", {"k": "\n"}]) == b'["x",{"k":"\\n"}]'  # not a string: json.dumps as before


# -------------------------------------------------------------------------------------- keyword shapes
_SCHEMA = (dict, bool)
_NUMBER = (int, float)


def _count_reference(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0 or (
        isinstance(v, float) and v.is_integer() and v >= 0)


def _check_shapes_reference(schema: dict, path: str) -> None:
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
            if not _count_reference(v):
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


SHAPE_VALUES = [{}, {"a": {}}, {"a": 1}, {"a": True}, [], ["a"], [1], [{}], [{}, 2], [True], "s", 0, 3, -1, 1.0, 1.5,
                -2.0, True, False, None]


def test_check_shapes_matches_the_keyword_by_keyword_reference():
    from realizar_ort.grammar.keywords import KNOWN, check_shapes

    def outcome(fn, schema):
        try:
            fn(schema, "#/x")
        except GrammarError as exc:
            return str(exc)
        return None

    keys = sorted(KNOWN) + ["title"]
    seen = set()
    for key in keys:
        for v in SHAPE_VALUES:
            got, want = outcome(check_shapes, {key: v}), outcome(_check_shapes_reference, {key: v})
            assert got == want, (key, v)
            seen.add(want is None)
    assert seen == {True, False}
    for a in ("type", "properties", "enum", "anyOf", "minLength"):  # the first bad keyword is named
        for b in ("required", "items", "pattern", "allOf"):
            for va in SHAPE_VALUES[::3]:
                for vb in SHAPE_VALUES[1::4]:
                    schema = {a: va, b: vb}
                    assert outcome(check_shapes, schema) == outcome(_check_shapes_reference, schema), schema


# ------------------------------------------------------------------------------ character-class templates
CLASSES = [
    [(0x61, 0x61)],  # one character: built directly
    [(0x30, 0x39), (0x61, 0x66)],
    [(0x00, 0x7F)],  # every control character: the escape prefixes
    [(0x00, 0x21), (0x23, 0x5B), (0x5D, 0x10FFFF)],  # [^"\\]-like, with the full multi-byte range
    [(0, 0xD7FF), (0xE000, 0x10FFFF)],  # "."-like
    [(0x41, 0x5A), (0xE9, 0xE9), (0x4E00, 0x9FFF), (0x1F600, 0x1F64F)],  # narrow multi-byte ranges
    [(0x09, 0x0A), (0x22, 0x22), (0x5C, 0x5C)],  # escapes only
]


@pytest.mark.parametrize("seg", [None, (2, 9)])
@pytest.mark.parametrize("ranges", CLASSES)
def test_character_class_stamped_from_its_template_equals_the_direct_build(ranges, seg):
    from realizar_ort.grammar import regex

    for _ in range(2):  # the second time from the per-process template
        fast, slow = Nfa(100_000), Nfa(100_000)
        for nfa in (fast, slow):
            for _ in range(9):
                nfa.state()
            nfa.state((0, 3))
        regex._Builder(fast, seg, lambda: None).char_edges(3, 7, ranges)
        regex._char_edges(slow, 3, 7, ranges, seg, INC if seg else 0)
        assert fast.num_states == slow.num_states
        assert fast.seg == slow.seg
        assert fast.edges == slow.edges
        assert not fast.eps and not fast.calls
    if len(ranges) > 1:
        assert regex._CHAR_TEMPLATES  # the wide classes went through the template cache
