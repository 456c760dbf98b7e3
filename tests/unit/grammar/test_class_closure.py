"""Class closures (:func:`realizar_ort.kernels.token_classes.class_loop_entries` with ``max_closure``): a state
whose class bytes keep it inside a few states (a URI path: ``57 -pchar-> 57``, ``57 -/-> 43 -pchar-> 57``; the
DFA is not minimised) gets the class shortcut for the whole set (pchar and ``/``), not only for the one group
of a self-loop it leads to ('/'), which walked nearly every token (~1.3 ms at 128k tokens). The masks must equal
the whole-trie walk with no shortcut bit for bit (real_vocab vocabularies) and the token-by-token reference (a hand
vocabulary)."""

from __future__ import annotations

import numpy as np
from realizar_ort.kernels.token_classes import class_loop_entries, loop_byte_groups

from realizar_ort.grammar.json_schema import compile_schema_automaton
from realizar_ort.grammar.matcher import (
    _GROUP_BIT,
    _GROUP_WORDS,
    CompiledGrammar,
    TokenVocabulary,
)
from realizar_ort.grammar.vocab import BYTE_GROUP

STOP = 1
SCHEMA = {"type": "object", "properties": {
    "url": {"type": "string", "format": "uri"},
    "home": {"type": "string", "format": "uri"},
    "path": {"type": "string", "pattern": "^(/[a-z0-9._-]+)+/?$"},
    "host": {"type": "string", "pattern": "^[a-z]+(\\.[a-z]+)*$"},
    "id": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
    "topic": {"type": "string", "pattern": "^[0-9a-zA-Z_-]{1,230}$"},
    "label": {"type": "string", "pattern": "^[a-z0-9-]{1,20}$"},
    "mail": {"type": "string", "format": "email", "maxLength": 24},
    "tag": {"type": "string", "pattern": "^[A-Za-z0-9:_-]+$", "maxLength": 12}},
    "additionalProperties": False}
VALUES = [
    {"url": "https://example.com/a/b-c/d.html?x=1&y=%20z#top", "home": "http://h.io/", "path": "/usr/local/bin/",
     "host": "api.example.org", "id": "ABC-1234", "topic": "my_mqtt-topic_01", "label": "abcdefghij-012345678",
     "mail": "john.doe@example.com", "tag": "abc:def_0123"},
    {"url": "urn:isbn:0451450523", "home": "https://x.y/z//w?q#f", "path": "/a", "host": "x", "id": "XYZ-0000", "topic": "T", "label": "a-b", "mail": "a@b.co",
     "tag": "x"},
]


def _bytes_of(groups: int) -> bytes:
    return bytes(b for b in range(256) if (groups >> int(BYTE_GROUP[b])) & 1)


def _pair(vocab) -> tuple[CompiledGrammar, CompiledGrammar]:
    automaton = compile_schema_automaton(SCHEMA)
    fast = CompiledGrammar(automaton, vocab)
    plain = CompiledGrammar(automaton, vocab, string_shortcuts=False, class_shortcuts=False)
    plain._mask_cache.no_reference = True  # the whole-trie walk everywhere
    return fast, plain


def _wide(grammar) -> set[int]:
    """The states whose class shortcut is a closure: not the class (a)/(b) of class_loop_entries would give."""
    a = grammar.automaton
    loop_groups, exact = loop_byte_groups(a.loop_bits, _GROUP_WORDS)
    classes = np.flatnonzero((loop_groups != 0) & ~a.plain_loop & exact)
    plain = class_loop_entries((a.trans, a.flags, grammar.automaton_arrays[2]), loop_groups, classes, _GROUP_BIT)
    return {q for q, g in enumerate(grammar._class_groups_l) if g and (g != plain[0][q] or
                                                                       grammar._class_len_l[q] != plain[2][q])}


def _bounded(grammar) -> set[int]:
    return {q for q in _wide(grammar) if grammar._class_len_l[q] >= 0}


def _counted(grammar) -> set[int]:
    """Closures inside a length-bounded string: the class row by the room left."""
    return {q for q in _wide(grammar) if grammar._class_len_l[q] == -2}


def test_class_closure_masks_equal_plain_walk_on_real_vocabularies(real_vocab, lockstep_mask_walk):
    tok, vocab, stop = real_vocab
    fast, plain = _pair(vocab)
    wide, bounded, counted = _wide(fast), _bounded(fast), _counted(fast)
    states = lockstep_mask_walk(fast, plain, tok, vocab.vocab_size, VALUES, stop, ensure_ascii=True)
    met = sum(q in wide for q in states)
    bounded_met = sum(q in bounded for q in states)
    counted_met = sum(q in counted for q in states)
    # closure states, bounded and counted ones too, were met along the instances
    assert met >= 4 and bounded_met >= 1 and counted_met >= 2
    assert not any(plain._class_groups_l)


def test_class_closure_masks_equal_token_by_token_reference(reference_mask_walk):
    """Every state along the instances on a hand vocabulary: each single byte, plus tokens mixing path bytes,
    '/', '?', '%', '#' and a closing quote."""
    token_bytes = [None, None] + [bytes([b]) for b in range(0x20, 0x100)] + [
        b"/a", b"a/", b"a/b", b"//", b"/?", b"?x=", b"%20", b"a%2", b'html"', b'/"', b'/",', b"#top", b"com/",
        b"example", b".com", b"-c/d", b"ABC", b"-12", b"1234", b"/bin/", b"bin/\"", b"org\"}", b"_01", b"mqtt", b"-topic", b"abcdefghij", b"-0123", b"45678", b"5678\"", b"a-b", b"john", b".doe", b"doe@", b"@example", b"abc:", b"def_0123", b"_0123\"", b"0123\"}"]
    vocab = TokenVocabulary.from_token_bytes(token_bytes, stop_token_ids=(STOP,))
    grammar = CompiledGrammar(compile_schema_automaton(SCHEMA), vocab)
    wide, bounded, counted = _wide(grammar), _bounded(grammar), _counted(grammar)
    states = reference_mask_walk(grammar, token_bytes, VALUES, STOP)
    assert sum(q in wide for q in states) >= 20
    assert sum(q in bounded for q in states) >= 5
    assert sum(q in counted for q in states) >= 10


def test_uri_path_state_gets_the_whole_path_class():
    """The URI path and query states: their class holds the path characters, '/' and '?', their exits only what
    can leave them (the closing quote, '#', '%', and ':' / '@' in the authority), never a letter or digit."""
    automaton = compile_schema_automaton({"type": "string", "format": "uri"})
    vocab = TokenVocabulary.from_token_bytes([None, None] + [bytes([b]) for b in range(0x20, 0x7F)], (STOP,))
    grammar = CompiledGrammar(automaton, vocab, string_shortcuts=False)
    exits = grammar._class_exit_l
    path = [q for q in _wide(grammar) if b"?" in _bytes_of(grammar._class_groups_l[q])]
    assert len(path) >= 10
    for q in path:
        assert set(_bytes_of(exits[q])) <= set(b'"#%:@')
    plain = CompiledGrammar(automaton, vocab, string_shortcuts=False, class_shortcuts=False)
    assert not any(plain._class_groups_l)
