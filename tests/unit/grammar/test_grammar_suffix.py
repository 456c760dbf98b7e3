"""The suffix tries of string bodies (tries 3 and 4: the string tokens keyed by what follows their leading
plain bytes) and the matcher's per-state miss data, against the token-by-token reference."""

from __future__ import annotations

import numpy as np
import pytest
from realizar_ort.kernels.token_mask import (
    S_SUFFIX,
    advance_token_bytes_reference,
)

from realizar_ort.grammar.json_schema import compile_schema_automaton
from realizar_ort.grammar.matcher import CompiledGrammar, TokenVocabulary, allocate_token_bitmask
from realizar_ort.grammar.vocab import PLAIN_BYTES, plain_suffix_trie

STOP = 1
# tokens that end, escape or leave a string after some plain text, in every context a string can close in
STRING_TOKENS = [b'abc"', b'ab"', b'a"', b'"', b'",', b'","', b'":"', b'":', b'"}', b'"},', b'"}]', b'"]}',
                 b'"]', b'"],"', b'"}}', b'x"}', b'hello",', b'lo","', b'name":"', b'ab\\n', b'\\n', b'\\"',
                 b'a\\"b', b'\\u00e9', b'\\u00', b'\\\\', b'x\\t"', b'caf\xc3\xa9"', b'\xc3\xa9"', b'\xc3',
                 b'12"}', b'ok":', b'a b"', b'{"', b'[', b']', b'}', b',"', b'true', b'null', b'1', b'-2.5',
                 b'abc', b'hello world', b'x', b'":[', b'":{"', b'"},{"', b' "', b'\t', b'\n"', b'ab\x01"']
SCHEMAS = [
    "any_object",
    {"type": "object", "properties": {"text": {"type": "string"}, "tags": {"type": "array", "items": {
        "type": "string", "minLength": 2, "maxLength": 12}}}, "required": ["text", "tags"]},
    {"type": "object", "properties": {"t": {"type": "string", "minLength": 3, "maxLength": 40},
                                      "u": {"type": "string", "maxLength": 5}}, "required": ["t", "u"]},
    # a minimum far above any string token's characters: the suffix tries also serve its first characters
    {"type": "array", "items": {"type": "string", "minLength": 24, "maxLength": 60}, "maxItems": 3},
]


def string_vocab() -> list[bytes | None]:
    toks: list[bytes | None] = [None, None]  # 0: a special token, 1: the stop token
    toks += [bytes([b]) for b in range(0x20, 0x7F)] + [bytes([b]) for b in range(0x80, 0x100)]
    return toks + STRING_TOKENS


@pytest.fixture(scope="module")
def vocab() -> TokenVocabulary:
    return TokenVocabulary.from_token_bytes(string_vocab(), stop_token_ids=(STOP,))


def _trie_tokens(trie) -> dict[int, bytes]:
    """token id -> the bytes on the path to its node."""
    out: dict[int, bytes] = {}
    path: list[int] = []
    for i in range(1, trie.byte.shape[0]):
        del path[int(trie.depth[i]) - 1:]
        path.append(int(trie.byte[i]))
        for tid in trie.token_ids[trie.token_ptr[i]:trie.token_ptr[i + 1]]:
            out[int(tid)] = bytes(path)
    return out


def test_plain_suffix_trie_keys_every_token_by_its_suffix(vocab):
    tables = vocab.tables
    plain = set(PLAIN_BYTES.tolist())
    for trie in (tables.rest_trie, tables.close_trie):
        suffix = plain_suffix_trie(trie, tables)
        full = _trie_tokens(trie)
        keyed = _trie_tokens(suffix)
        assert set(keyed) == set(full) and len(full) > 10
        for tid, raw in full.items():
            k = next(i for i, b in enumerate(raw) if b not in plain)
            assert keyed[tid] == raw[k:]


def test_plain_suffix_trie_refuses_a_plain_token(vocab):
    tables = vocab.tables
    with pytest.raises(ValueError, match="plain bytes only"):
        plain_suffix_trie(tables.trie, tables)


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: str(s)[:30])
def test_string_body_masks_equal_reference_along_random_walks(vocab, schema, reference_mask):
    grammar = CompiledGrammar(compile_schema_automaton(schema), vocab)  # a fresh mask cache
    info = grammar.automaton_arrays[2]
    assert (info[:, S_SUFFIX] != 0).any(), "the schema should exercise the suffix tries"
    rng = np.random.default_rng(5)
    token_bytes = [vocab.token_bytes(i) or None for i in range(vocab.vocab_size)]
    arrays = grammar.automaton_arrays
    suffix_steps = early_steps = 0
    for _walk in range(8):
        m = grammar.matcher()
        for _step in range(40):
            q, cnt = m._state, m._counter
            got = allocate_token_bitmask(vocab.vocab_size)
            m.fill_next_token_bitmask(got)
            np.testing.assert_array_equal(got, reference_mask(m, grammar, token_bytes, STOP))
            stack = [int(x) for x in m._stack[: m._stack_len]]
            s = int(info[q, S_SUFFIX])
            far_below_min = info[q, 3] - cnt >= -s  # the minimum cannot be met inside one token either way
            suffix_steps += s > 0 or (s < 0 and (cnt >= info[q, 3] or far_below_min) and info[q, 4] - cnt >= -s)
            early_steps += s < 0 and cnt < info[q, 3] and far_below_min
            tok = int(rng.choice(m.allowed_token_ids()))
            if tok == STOP:
                break
            ref = advance_token_bytes_reference(arrays, token_bytes[tok], q, cnt, stack, grammar.max_depth)
            assert m.advance(tok) and ref is not None and ref[0] == m._state
    assert suffix_steps > 5
    if schema is SCHEMAS[-1]:
        assert early_steps > 5


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: str(s)[:30])
def test_suffix_tries_change_no_mask(vocab, schema):
    """Every reachable-by-walk configuration: the kernel with the suffix tries equals it without them."""
    with_suffix = CompiledGrammar(compile_schema_automaton(schema), vocab)
    without = CompiledGrammar(compile_schema_automaton(schema), vocab)
    without.automaton_arrays[2][:, S_SUFFIX] = 0
    rng = np.random.default_rng(9)
    a, b = with_suffix.matcher(), without.matcher()
    for _walk in range(10):
        a.reset()
        b.reset()
        for _step in range(40):
            ma, mb = allocate_token_bitmask(vocab.vocab_size), allocate_token_bitmask(vocab.vocab_size)
            a.fill_next_token_bitmask(ma)
            b.fill_next_token_bitmask(mb)
            np.testing.assert_array_equal(ma, mb)
            tok = int(rng.choice(a.allowed_token_ids()))
            if tok == STOP:
                break
            assert a.advance(tok) and b.advance(tok)
