"""Reference states of the mask walk (:mod:`realizar_ort.grammar.state_reference`): a property key's trie node
copies the free string's mask and walks only the first bytes where the two differ. The fast mask must equal
the plain walk bit for bit (real_vocab vocabularies) and the token-by-token reference (a hand vocabulary)."""

from __future__ import annotations

import numpy as np
import pytest
from realizar_ort.kernels.state_equivalence import equivalent_states

from realizar_ort.grammar.json_schema import compile_schema_automaton
from realizar_ort.grammar.matcher import CompiledGrammar, TokenVocabulary

STOP = 1
KEY_TOKENS = [b'{"', b'":', b'",', b'"}', b'id', b'ide', b'identifier', b'ntifier', b'caf', b'\xc3\xa9', b'caf\xc3\xa9',
              b'\xe6\x97\xa5', b'\\"', b'\\t', b'\\', b'quo', b'te', b'nam', b'name', b'es', b'":"', b'":{"', b'tab',
              b'key', b'x', b'","', b'1,"', b'true', b'null', b'[]', b'2', b'1}']


def hand_vocab() -> list[bytes | None]:
    """Every single byte (so any text can be forced) plus key-shaped multi-byte tokens."""
    return [None, None] + [bytes([b]) for b in range(0x20, 0x7F)] + [bytes([b]) for b in range(0x80, 0x100)] \
        + KEY_TOKENS


VOCAB = TokenVocabulary.from_token_bytes(hand_vocab(), stop_token_ids=(STOP,))

# open objects (additionalProperties absent = allowed): names that are prefixes of one another, non-ASCII,
# escaped, and instances with extra keys that leave the trie at every depth
OPEN = {"type": "object", "properties": {
    "id": {"type": "integer"}, "identifier": {"type": "string"}, "café": {"type": "boolean"},
    'quo"te': {"type": "null"}, "tab\tkey": {"type": "integer"},
    "nested": {"type": "object", "properties": {"name": {"type": "string"}, "nick": {"type": "string"}}}},
    "required": ["id"]}
OPEN_VALUES = [
    {"id": 1, "identifier": "x", "café": True, 'quo"te': None, "tab\tkey": 2,
     "nested": {"name": "ada", "nick": "a", "nam": 1, "names": [], "ñame": "é"},
     "idx": 3, "i": 4, "caf": 5, "cafe": 6, "café2": 7, "quo": 8, "日本": 9, "": 10, "a\\b": 11, "ide": 12},
    {"id": -7, "nested": {"nick": "z", "n": {"x": [1, {"name": "deep"}]}}, "identifier2": "y"},
]
PATTERN = {"type": "object", "properties": {
    "code": {"type": "string", "pattern": "rocket_font"},
    "style": {"type": "string", "pattern": "normal|italic"},
    "uuid": {"type": "string", "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}$"}, "url": {"type": "string", "format": "uri"}}}
PATTERN_VALUES = [{"code": "my rocket_font file", "style": "bold italic", "uuid": "0123abcd-12ef",
                   "url": "https://example.com/a?b=c", "more": "é"}]


def _pair(schema, vocab) -> tuple[CompiledGrammar, CompiledGrammar]:
    automaton = compile_schema_automaton(schema)
    # no class shortcuts: with class closures (test_class_closure.py) a URI's states are class states, which
    # take no reference, and this test would prove little about references
    fast = CompiledGrammar(automaton, vocab, class_shortcuts=False)
    plain = CompiledGrammar(automaton, vocab, string_shortcuts=False, class_shortcuts=False)
    plain._mask_cache.no_reference = True  # the whole-trie walk everywhere
    return fast, plain


def _used(grammar) -> int:
    return sum(1 for r in grammar._mask_cache.refs if isinstance(r, tuple))


@pytest.mark.parametrize(("schema", "values"), [(OPEN, OPEN_VALUES), (PATTERN, PATTERN_VALUES)],
                         ids=["open-objects", "patterns"])
def test_reference_masks_equal_plain_walk_on_real_vocabularies(real_vocab, schema, values, lockstep_mask_walk):
    tok, vocab, stop = real_vocab
    fast, plain = _pair(schema, vocab)
    lockstep_mask_walk(fast, plain, tok, vocab.vocab_size, values, stop)
    # the key trie nodes took the reference path or the string shortcut (a trie node that no run of plain
    # characters kills; see test_plain_closure.py), as did an unanchored pattern's states; the plain walk neither
    closed = fast.automaton_arrays[2][:, 5] != fast.automaton.plain_loop
    assert _used(fast) + int(closed.sum()) >= (10 if schema is OPEN else 4)
    if schema is PATTERN:
        assert _used(fast) >= 1  # a URI's first state copies its scheme loop's mask
    assert _used(plain) == 0


def test_reference_masks_equal_token_by_token_reference(reference_mask_walk):
    """Every key state met along the instances, on the hand vocabulary (multi-byte, escape and key tokens)."""
    automaton = compile_schema_automaton(OPEN)
    grammar = CompiledGrammar(automaton, VOCAB)
    closed = grammar.automaton_arrays[2][:, 5] != automaton.plain_loop  # key trie nodes: the string shortcut
    token_bytes = hand_vocab()
    states = reference_mask_walk(grammar, token_bytes, OPEN_VALUES, STOP)
    checked = sum(isinstance(grammar._mask_cache.refs[q], tuple) or bool(closed[q]) for q in states)
    assert checked >= 20


def _automaton_arrays(rows: dict[int, dict[int, int]], n: int, final=()):
    trans = np.full((n, 256), -1, np.int32)
    for q, edges in rows.items():
        for b, t in edges.items():
            trans[q, b] = t
    fin = np.zeros(n, np.bool_)
    fin[list(final)] = True
    minus = np.full(n, -1, np.int32)
    return trans, np.zeros((n, 256), np.uint8), fin, minus, minus.copy(), np.zeros(n, np.int32), np.zeros(n, np.int32)


def test_equivalence_search_is_exact_and_bounded():
    a, b, c = ord("a"), ord("b"), ord("c")
    # 1 and 2 are copies (each: 'a' to a copy of the other, 'c' to the final 5); 3 differs two bytes down
    rows = {1: {a: 2, c: 5}, 2: {a: 1, c: 5}, 3: {a: 4, c: 5}, 4: {a: 4, c: 6}, 6: {b: 5}}
    arrays = _automaton_arrays(rows, 7, final=(5,))
    assert equivalent_states(*arrays, 1, 2, 16)
    assert not equivalent_states(*arrays, 1, 3, 16)  # 1 a a c accepts, 3 a a c needs a 'b' more
    assert not equivalent_states(*arrays, 1, 4, 16)
    long_rows = {q: {a: q + 1} for q in range(40)} | {q: {a: q + 1} for q in range(50, 90)}
    chain = _automaton_arrays(long_rows | {40: {c: 45}, 90: {c: 45}}, 96, final=(45,))
    assert equivalent_states(*chain, 0, 50, 64)
    assert not equivalent_states(*chain, 0, 50, 16)  # past the budget: not proven, the caller walks
