"""String states that no run of (allowed) plain characters can kill take the kernel's string shortcut
(:mod:`realizar_ort.kernels.plain_closure`): an unanchored pattern's search and match states, negated or broad
classes (with the row less the tokens of the bytes they refuse), in bounded strings too. The masks must equal
the plain whole-trie walk bit for bit (real_vocab vocabularies) and the token-by-token reference (a hand vocabulary)."""

from __future__ import annotations

import numpy as np
from realizar_ort.kernels.plain_closure import plain_closed_states

from realizar_ort.grammar.automaton import INC, ROOM
from realizar_ort.grammar.json_schema import compile_schema_automaton
from realizar_ort.grammar.matcher import (
    _CHAR_PATHS,
    _GROUP_BIT,
    CompiledGrammar,
    TokenVocabulary,
)

STOP = 1
# unanchored patterns (search, match so far, matched), a negated class, an ASCII-only class loop, bounded
# strings (one ending at its maxLength inside the instance), a pattern refusing DEL
SCHEMA = {"type": "object", "properties": {
    "wifi": {"type": "string", "pattern": "wifi"},
    "alnum": {"type": "string", "pattern": "[A-Za-z0-9]+"},
    "hotel": {"type": "string", "pattern": ".*[Hh]otel [Pp]aris.*"},
    "kind": {"type": "string", "pattern": "integer|continuous"},
    "noslash": {"type": "string", "pattern": "^[^/]+$"},
    "words": {"type": "string", "pattern": "^[a-z ]+$"},
    "stamp": {"type": "string", "minLength": 10, "maxLength": 10, "pattern": "[0-9]{10,10}"},
    "name": {"type": "string", "pattern": "^[a-zA-Z0-9 _-]+$", "maxLength": 1024},
    "short": {"type": "string", "pattern": "^[^/]+$", "maxLength": 12},
    "tail": {"type": "string", "pattern": "b", "maxLength": 9}},
    "additionalProperties": False}
VALUES = [
    {"wifi": "my wifi é net\\n", "alnum": "--ab cd", "hotel": "the Hotel Paris «5»", "kind": "continuous",
     "noslash": "ab\\\\cd é\"x", "words": "just words", "stamp": "1643723400", "name": "my app_1",
     "short": "abcdefghijk", "tail": "xxxxbxxxx"},
    {"wifi": "wifi", "alnum": "é9", "hotel": "hotel paris", "kind": "an integer", "noslash": "\u00e9\u2028",
     "words": "a", "stamp": "0000000000", "name": "-", "short": "a", "tail": "b"},
]


def _pair(schema, vocab) -> tuple[CompiledGrammar, CompiledGrammar]:
    automaton = compile_schema_automaton(schema)
    fast = CompiledGrammar(automaton, vocab)
    plain = CompiledGrammar(automaton, vocab, string_shortcuts=False)
    plain._mask_cache.no_reference = True  # the whole-trie walk everywhere
    return fast, plain


def _closed(grammar) -> np.ndarray:
    """The states the string shortcut covers beyond the plain loops, and the kind (1, or 2 = bytes excluded)."""
    info = grammar._kernel_args[8]
    return np.where(grammar.automaton.plain_loop, 0, info[:, 5])


def test_string_shortcut_masks_equal_plain_walk_on_real_vocabularies(real_vocab, lockstep_mask_walk):
    tok, vocab, stop = real_vocab
    fast, plain = _pair(SCHEMA, vocab)
    kinds = _closed(fast)
    states = lockstep_mask_walk(fast, plain, tok, vocab.vocab_size, VALUES, stop)
    met = {(int(kinds[q]), bool(fast.automaton.counted[q])) for q in states}
    # shortcut states, bounded and not, were met along the instances (pattern strings refuse DEL: kind 2)
    assert {(2, False), (2, True)} <= met
    assert not _closed(plain).any()


def test_string_shortcut_masks_equal_token_by_token_reference(reference_mask_walk):
    """Every state along the instances on a hand vocabulary: each single byte, plus tokens that hold an excluded
    byte, a quote or an escape after plain text, DEL, U+2028 and a partial UTF-8 character."""
    token_bytes = [None, None] + [bytes([b]) for b in range(0x20, 0x100)] + [
        b"wi", b"fi", b"wifi", b"ab/", b"a/b", b'x"', b'x",', b'c"}', b"a\\n", b"\\u00e9", b"\x7f", b"a\x7f",
        b"\xe2\x80\xa8", b"\xc3", b"a\xc3", b"Hotel", b" Paris", b"123", b"12345678901", b"my app", b"\xc3\xa9"]
    vocab = TokenVocabulary.from_token_bytes(token_bytes, stop_token_ids=(STOP,))
    grammar = CompiledGrammar(compile_schema_automaton(SCHEMA), vocab)
    kinds = _closed(grammar)
    states = reference_mask_walk(grammar, token_bytes, VALUES, STOP)
    checked = sum(kinds[q] != 0 for q in states)
    assert checked >= 60


def test_closed_states_are_exactly_those_no_plain_run_kills():
    def closed(schema):
        a = compile_schema_automaton(schema)
        found, excluded, _chars = plain_closed_states(a.arrays, a.counted, _CHAR_PATHS, _GROUP_BIT, INC, ROOM)
        return a, found & ~a.plain_loop, excluded

    _a, found, excluded = closed({"type": "string", "pattern": "wifi"})
    assert found.sum() >= 5  # the search state, w, wi, wif, the matched state
    assert (excluded[found] != 0).all()  # pattern strings refuse DEL (not a plain character there)
    _a, found, _x = closed({"type": "string", "pattern": "^wifi$"})  # a plain run kills every state
    assert not found.any()
    # '.' refuses U+2028 and U+2029 (line terminators): closed, with those two characters excluded (no byte
    # group: see test_plain_closure_chars.py)
    a = compile_schema_automaton({"type": "string", "pattern": "^(.+)/(.+)$"})
    found, _x, chars = plain_closed_states(a.arrays, a.counted, _CHAR_PATHS, _GROUP_BIT, INC, ROOM)
    assert (found & ~a.plain_loop).any()
    assert set(chars.values()) == {("\u2028".encode(), "\u2029".encode())}
    # a negated class: every plain byte but '/' (its own byte group) and DEL
    a, found, excluded = closed({"type": "string", "pattern": "^[^/]+$"})
    assert found.any() and len(set(excluded[found].tolist())) == 1
    assert int(excluded[found][0]) == int(_GROUP_BIT[ord("/")] | _GROUP_BIT[0x7F])
    # a bounded string: the same, with the counter's flags
    a, found, _x = closed({"type": "string", "pattern": "wifi", "maxLength": 20})
    assert found.any() and a.counted[found].all()
