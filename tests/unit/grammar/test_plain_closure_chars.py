"""String states that refuse a few multi-byte characters (``.`` refuses U+2028 and U+2029, ``\\S`` the Unicode
spaces) still take the kernel's string shortcut (:mod:`realizar_ort.kernels.plain_closure`): their row is the
text row less the tokens holding one of those characters. The masks must equal the plain whole-trie walk bit for
bit (real_vocab vocabularies) and the token-by-token reference (a hand vocabulary with those characters whole, partial,
before a quote and as stray continuation bytes)."""

from __future__ import annotations

import numpy as np

from realizar_ort.grammar.json_schema import compile_schema_automaton
from realizar_ort.grammar.matcher import CompiledGrammar, TokenVocabulary

STOP = 1
SPACES = "\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
SCHEMA = {"type": "object", "properties": {
    "dot": {"type": "string", "pattern": "^.+$"},
    "dotmid": {"type": "string", "pattern": "^(.+)/(.+)$"},
    "nows": {"type": "string", "pattern": "^\\S+$"},
    "notws": {"type": "string", "pattern": "^[^\\s/]*$"},
    "version": {"type": "string", "pattern": "^(\\d+\\.\\d+\\.\\d+.*)$"},
    "short": {"type": "string", "pattern": "^.+$", "maxLength": 8},
    "words": {"type": "string", "pattern": "^\\S+@\\S+$", "maxLength": 40},
    "free": {"type": "string"},
    "https": {"type": "string", "pattern": "^https://.+$"}},
    "additionalProperties": False}
# allowed neighbours of the refused characters (U+2027, U+202A, U+2030, U+1681, U+3001, U+FEFE ...), the refused
# ones where another field allows them (a free string; '.' takes the Unicode spaces, '\S' does not)
VALUES = [
    {"dot": "a\u00a0b\u3000c\u2027\u202a\u2030 é 😀", "dotmid": "x\u2000y/z\ufeffw", "nows": "ab\u2027\u3001\u00a1é😀",
     "notws": "a\u2030b\u200b\ufefe", "version": "1.2.3-\u00a0beta\u3000", "short": "ab\u2030cdéf",
     "words": "a\u2027b@c\u202ad", "free": "\u2028\u2029\u3000 \u00a0", "https": "https://x\u00a0y\u1680"},
    {"dot": "\u1680\u205f", "dotmid": "a/b", "nows": "x", "notws": "", "version": "10.20.30",
     "short": "12345678", "words": "é@😀", "free": "a", "https": "https://é"},
]


def _pair(schema, vocab) -> tuple[CompiledGrammar, CompiledGrammar]:
    automaton = compile_schema_automaton(schema)
    fast = CompiledGrammar(automaton, vocab)
    plain = CompiledGrammar(automaton, vocab, string_shortcuts=False, class_shortcuts=False)
    plain._mask_cache.no_reference = True  # the whole-trie walk everywhere
    return fast, plain


def test_excluded_characters_are_found():
    fast = CompiledGrammar(compile_schema_automaton(SCHEMA), TokenVocabulary.from_token_bytes(
        [None, None] + [bytes([b]) for b in range(0x20, 0x100)], stop_token_ids=(STOP,)))
    found = {tuple(c.decode() for c in chars) for chars in fast.excluded_chars.values()}
    assert ("\u2028", "\u2029") in found  # '.'
    assert tuple(SPACES) in found  # '\S' and [^\s/] (with the ASCII space and '/' as excluded byte groups)


def test_excluded_character_masks_equal_plain_walk_on_real_vocabularies(real_vocab, lockstep_mask_walk):
    tok, vocab, stop = real_vocab
    fast, plain = _pair(SCHEMA, vocab)
    met = set()
    refused = 0

    def check(matcher, mask) -> None:
        nonlocal refused
        q = matcher._state
        if q in fast.excluded_chars:
            met.add(bool(fast.automaton.counted[q]))
            # the row really lost tokens here: some token holding a refused character exists and is refused
            with_char = np.zeros_like(mask)
            for char in fast.excluded_chars[q]:
                np.bitwise_or(with_char, vocab._tokens_with_char(char), out=with_char)
            refused += int(with_char.any() and not (with_char & mask).any())

    lockstep_mask_walk(fast, plain, tok, vocab.vocab_size, VALUES, stop, on_step=check)
    assert met == {False, True}  # unbounded and length-bounded states with refused characters
    assert refused >= 20


def test_excluded_character_masks_equal_token_by_token_reference(reference_mask_walk):
    """Every state along the instances on a hand vocabulary: single bytes, plus the refused characters whole,
    partial (a proper prefix is taken: it may end in an allowed character), after text, before a quote, twice,
    as stray continuation bytes and after an invalid lead; their allowed neighbours."""
    token_bytes = [None, None] + [bytes([b]) for b in range(0x20, 0x100)] + [
        b"\xe2\x80\xa8", b"\xe2\x80\xa9", b"\xe2\x80", b"a\xe2\x80", b"a\xe2", b"\xe2\x80\xa8x", b"x\xe2\x80\xa8",
        b"\xe2\x80\xa7", b"\xe2\x80\xaa", b"\xc2\xa0", b"a\xc2", b"\xc2\xa1", b"\xe3\x80\x80", b"\xe3\x80",
        b"\xe3\x80\x81", b"\xe1\x9a\x80", b"\xe1\x9a", b"\xe1\x9a\x81", b"\xef\xbb\xbf", b"\xef\xbb", b"\xef\xbb\xbe",
        b"\x80\xa8", b"\xa8\xa9", b"\xe2\x80\xa9\"", b"a\xe2\x80\xa8\"", b"\xe2\x80\xa7\"", b"\xf0\x9f\x98\x80",
        b"\xf0\x9f\x98", b"ab", b"1.2", b".3-", b'x"', b'c"}', b"a b", b"\xe2\x80\x80", b"\xe2\x80\x8a",
        b"\xe2\x80\x8b", b"\xe2\x81\x9f", b"\xe2\x81\x9e", b"\xe2\x80\xa8\xe2\x80\xa9", b"\xe2\xe2\x80\xa8",
        b"\xe2\x80\xa8\\n", b"a\\u2028", b"\xc2\xa0@", b"@\xe3\x80\x80", b"\xe2\x80\xaf/", b"/\xe2\x80\xaf",
        b"https://", b"//\xc2\xa0"]
    vocab = TokenVocabulary.from_token_bytes(token_bytes, stop_token_ids=(STOP,))
    grammar = CompiledGrammar(compile_schema_automaton(SCHEMA), vocab)
    states = reference_mask_walk(grammar, token_bytes, VALUES, STOP)
    checked = [q for q in states if q in grammar.excluded_chars]
    assert len(checked) >= 60
    assert {bool(grammar.automaton.counted[q]) for q in checked} == {False, True}


def _refused_chars(arrays, q, lo, hi) -> set[bytes]:
    """Brute force: the characters U+lo..U+hi (no surrogates) that state ``q`` refuses at some byte."""
    trans = arrays[0]
    out = set()
    for cp in range(lo, hi + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        s = q
        for byte in chr(cp).encode():
            s = trans[s, byte]
            if s < 0:
                out.add(chr(cp).encode())
                break
    return out


def test_excluded_characters_are_exactly_the_refused_ones():
    """Every closed state refuses exactly its listed multi-byte characters (brute force over U+0080-U+31FF and
    the last plane's start), also when the automaton sends several lead bytes to one middle state that refuses a
    byte (then the refusal is many characters: the state must not be closed with only one of them listed)."""
    from realizar_ort.kernels.plain_closure import plain_closed_states

    from realizar_ort.grammar.automaton import INC, ROOM
    from realizar_ort.grammar.matcher import _CHAR_PATHS, _GROUP_BIT

    def check(arrays, counted):
        found, _x, chars = plain_closed_states(arrays, counted, _CHAR_PATHS, _GROUP_BIT, INC, ROOM)
        closed = np.flatnonzero(found).tolist()
        for q in closed:
            refused = _refused_chars(arrays, q, 0x80, 0x31FF) | _refused_chars(arrays, q, 0xFE00, 0xFFFF)
            assert refused == set(chars.get(q, ())), q
        return closed, chars

    for pattern in ("^.+$", "^\\S+$", "^[^\u00a0\u00e0]+$", "^(.+)/(.+)$"):
        a = compile_schema_automaton({"type": "string", "pattern": pattern})
        closed, chars = check(a.arrays, a.counted)
        assert set(closed) & set(chars)
    # one middle state for the lead bytes C2 and C3, refusing A0: U+00A0 and U+00E0 both refused
    a = compile_schema_automaton({"type": "string", "pattern": "^[^\u00a0]+$"})
    arrays = list(a.arrays)
    trans = arrays[0].copy()
    starts = [q for q in range(trans.shape[0]) if trans[q, 0x61] >= 0 and trans[q, 0xC2] >= 0]
    for q in starts:
        trans[q, 0xC3] = trans[q, 0xC2]
    arrays[0] = trans
    closed, chars = check(tuple(arrays), a.counted)
    assert not set(closed) & set(chars)  # not closed: a refused byte after more than one prefix
