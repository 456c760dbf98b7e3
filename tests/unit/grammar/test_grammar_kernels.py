"""The mask fast paths against plain references: byte-group summaries, the automaton summary kernels,
character-class token rows and their shortcut, and the mask caches (a hit equals a cold computation)."""

from __future__ import annotations

import numpy as np
import pytest
from realizar_ort.kernels.automaton_summary import plain_loop_states, self_loop_bits
from realizar_ort.kernels.token_classes import (
    loop_byte_groups,
    short_tokens_within_groups,
    tokens_within_groups,
)
from realizar_ort.kernels.token_mask import advance_token_bytes_reference

from realizar_ort.grammar.automaton import INC, PLAIN_ASCII, ROOM, plain_loops_reference, utf8_multibyte_paths
from realizar_ort.grammar.json_schema import compile_schema_automaton
from realizar_ort.grammar.matcher import (
    COMMON_CLASSES,
    CompiledGrammar,
    TokenVocabulary,
    allocate_token_bitmask,
    compile_json_schema,
)
from realizar_ort.grammar.vocab import BYTE_GROUP, NUM_BYTE_GROUPS, PLAIN_GROUPS

STOP = 1
# tokens that cross a character-class loop's edge: class runs, exits ('@', '.', '"'), and mixes
CLASS_TOKENS = [b'ABC', b'AB', b'ABCD', b'ABC-', b'-12', b'1234', b'34"', b'123', b'2024-', b'01-', b'0f',
                b'deadbeef', b'e4-', b'A1', b'ZZ', b'-0', b'ada', b'Ada9', b'a.b', b'a@b', b'@', b'@ex',
                b'ample', b'.com', b'com', b'com"', b'm"}', b'"}', b'x_y', b'%+', b'-', b'ab-', b'a-b.',
                b'42', b'4.5', b'12,', b'7]', b'}}', b'{"', b'":"', b'","', b'":', b'a b', b'\xc3\xa9',
                b'caf\xc3\xa9', b'e+', b'-1', b'true', b'null', b'"e":"', b'"d":', b'",[', b'a@b.c',
                b'x.y.z', b'9@', b'@b"']


def class_vocab() -> list[bytes | None]:
    toks: list[bytes | None] = [None, None]  # 0: a special token, 1: the stop token
    toks += [bytes([b]) for b in range(0x20, 0x7F)] + [bytes([b]) for b in range(0x80, 0x100)]
    toks += CLASS_TOKENS
    return toks


@pytest.fixture(scope="module")
def vocab() -> TokenVocabulary:
    return TokenVocabulary.from_token_bytes(class_vocab(), stop_token_ids=(STOP,))


def group_set(data: bytes) -> int:
    return int(np.bitwise_or.reduce(np.left_shift(np.uint64(1), BYTE_GROUP[list(data)].astype(np.uint64))))


def test_byte_groups_make_plain_text_and_common_classes_exact():
    assert NUM_BYTE_GROUPS <= 64
    plain = bytes(b for b in range(0x20, 0x80) if b not in b'"\\')
    members = {b for b in range(256) if (int(PLAIN_GROUPS) >> int(BYTE_GROUP[b])) & 1}
    assert members == set(plain)
    for cls, _max_len in COMMON_CLASSES:  # each class is a union of whole groups
        groups = group_set(cls)
        assert {b for b in range(256) if (groups >> int(BYTE_GROUP[b])) & 1} == set(cls)


def test_tokens_within_groups_equals_reference():
    rng = np.random.default_rng(3)
    token_groups = rng.integers(0, 2**20, size=1000, dtype=np.uint64)
    token_groups[::7] = 0  # tokens without bytes are never set
    lengths = rng.integers(1, 9, size=1000)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    for allowed in (0, 0xFFFFF, 0x0F0F0, int(rng.integers(0, 2**20))):
        for max_len in (-1, 0, 3, 8):
            got = allocate_token_bitmask(1000)
            tokens_within_groups(token_groups, offsets, allowed, got, max_len)
            expect = (token_groups != 0) & ((token_groups & ~np.uint64(allowed)) == 0)
            if max_len >= 0:
                expect &= lengths <= max_len
                by_length = np.argsort(lengths, kind="stable")
                starts = np.searchsorted(lengths[by_length], np.arange(lengths.max() + 2))
                short = allocate_token_bitmask(1000)
                short_tokens_within_groups(token_groups[by_length], by_length.astype(np.int32), starts, allowed,
                                           max_len, short)
                np.testing.assert_array_equal(short, got)
            np.testing.assert_array_equal(np.unpackbits(got.view(np.uint8), bitorder="little")[:1000], expect)


def test_loop_byte_groups_equals_reference():
    words = np.packbits(BYTE_GROUP[None, :] == np.arange(NUM_BYTE_GROUPS)[:, None], axis=1,
                        bitorder="little").view(np.uint64)
    sets = [b"", b"0123456789", b"012345678", b"abcdef", b"abcdefg", COMMON_CLASSES[1][0], bytes(range(256))]
    loop_bits = np.zeros((len(sets), 5), dtype=np.uint64)
    for q, members in enumerate(sets):
        bits = np.zeros(256, dtype=bool)
        bits[list(members)] = True
        loop_bits[q, :4] = np.packbits(bits, bitorder="little").view(np.uint64)
        loop_bits[q, 4] = bits.any()
    groups, exact = loop_byte_groups(loop_bits, words)
    for q, members in enumerate(sets):
        whole = {g for g in range(NUM_BYTE_GROUPS) if set(np.flatnonzero(BYTE_GROUP == g)) <= set(members)}
        assert int(groups[q]) == sum(1 << g for g in whole)
        union = {b for b in range(256) if BYTE_GROUP[b] in whole}
        assert bool(exact[q]) == (bool(members) and union == set(members))


SUMMARY_SCHEMAS = [
    "any_json",
    {"type": "object", "properties": {"e": {"type": "string", "format": "email"},
                                      "s": {"type": "string", "minLength": 2, "maxLength": 9},
                                      "p": {"type": "string", "pattern": "^[a-z]+(-[a-z0-9]+)*$"},
                                      "n": {"type": "array", "items": {"type": "number"}}}},
    {"enum": ["a", "é", 3]},
]


@pytest.mark.parametrize("schema", SUMMARY_SCHEMAS, ids=lambda s: str(s)[:30])
def test_automaton_summary_kernels_equal_numpy(schema):
    a = compile_schema_automaton(schema, whitespace=1)
    paths = [[r] for r in PLAIN_ASCII] + utf8_multibyte_paths()
    ref = plain_loops_reference(a.trans, a.flags, a.counted)
    np.testing.assert_array_equal(plain_loop_states(a.trans, a.flags, a.counted, paths, INC, ROOM), ref)
    np.testing.assert_array_equal(a.plain_loop, ref)
    loops = (a.trans == np.arange(a.num_states)[:, None]) & (a.flags == 0)
    bits = self_loop_bits(a.trans, a.flags)
    np.testing.assert_array_equal(bits[:, :4], np.packbits(loops, axis=1, bitorder="little").view(np.uint64))
    np.testing.assert_array_equal(bits[:, 4] != 0, loops.any(axis=1))


CLASS_SCHEMAS = [
    {"type": "object", "properties": {"to": {"type": "string", "format": "email"}, "n": {"type": "integer"}},
     "required": ["to"]},
    {"type": "object", "properties": {"id": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                                      "u": {"type": "string", "format": "uuid"},
                                      "d": {"type": "string", "format": "date"}}},
    {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z0-9_]+(\\.[a-z0-9]+)?$"}, "maxItems": 3},
    "any_json",
    {"$defs": {"t": {"type": "object", "properties": {"v": {"type": "number"},
                                                      "k": {"type": "array", "items": {"$ref": "#/$defs/t"}}},
                     "required": ["v"], "additionalProperties": False}}, "$ref": "#/$defs/t"},
]


@pytest.mark.parametrize("schema", CLASS_SCHEMAS, ids=lambda s: str(s)[:40])
def test_class_shortcut_masks_equal_reference_along_random_walks(vocab, schema, reference_mask):
    grammar = compile_json_schema(schema, vocab)
    assert any(grammar._class_groups_l), "the schema should exercise the class shortcut"
    rng = np.random.default_rng(11)
    token_bytes = [vocab.token_bytes(i) or None for i in range(vocab.vocab_size)]
    arrays = grammar.automaton_arrays
    visited_class_states = 0
    for _walk in range(6):
        m = grammar.matcher()
        for _step in range(30):
            got = allocate_token_bitmask(vocab.vocab_size)
            m.fill_next_token_bitmask(got)
            np.testing.assert_array_equal(got, reference_mask(m, grammar, token_bytes, STOP))
            stack = [int(x) for x in m._stack[: m._stack_len]]
            visited_class_states += grammar._class_groups_l[m._state] != 0
            allowed = m.allowed_token_ids()
            tok = int(rng.choice(allowed))
            if tok == STOP:
                break
            ref = advance_token_bytes_reference(arrays, token_bytes[tok], m._state, m._counter, stack,
                                                grammar.max_depth)
            assert m.advance(tok) and ref is not None and ref[0] == m._state
    assert visited_class_states > 0


def test_class_rows_are_shared_and_equal_a_cold_computation(vocab):
    groups = group_set(COMMON_CLASSES[1][0])
    row = vocab.class_row(groups)
    assert vocab.class_row(groups) is row and not row.flags.writeable
    cold = allocate_token_bitmask(vocab.vocab_size)
    tokens_within_groups(vocab.tables.token_groups, vocab.tables.token_offsets, groups, cold)
    np.testing.assert_array_equal(row, cold)
    ids = set(np.flatnonzero(np.unpackbits(row.view(np.uint8), bitorder="little")).tolist())
    members = set(COMMON_CLASSES[1][0])
    expect = {i for i in range(vocab.vocab_size) if vocab.token_bytes(i) and set(vocab.token_bytes(i)) <= members}
    assert ids == expect
    assert vocab.token_bytes(len(class_vocab()) - len(CLASS_TOKENS) + CLASS_TOKENS.index(b"x_y")) == b"x_y"


@pytest.mark.parametrize("schema", CLASS_SCHEMAS[:2] + [
    {"type": "object", "properties": {"s": {"type": "string", "minLength": 3, "maxLength": 6}}, "required": ["s"]}],
    ids=lambda s: str(s)[:40])
def test_mask_cache_hits_equal_cold_masks(vocab, schema):
    """Two matchers share a grammar's cache; every mask of the second (cache hits) equals the mask a fresh
    grammar and a fresh vocabulary object (no cached masks, no cached class rows) compute cold."""
    rng = np.random.default_rng(5)
    grammar = CompiledGrammar(compile_schema_automaton(schema), vocab)
    for _walk in range(3):
        m = grammar.matcher()
        history = []
        for _step in range(25):
            mask = allocate_token_bitmask(vocab.vocab_size)
            m.fill_next_token_bitmask(mask)
            allowed = np.flatnonzero(np.unpackbits(mask.view(np.uint8), bitorder="little")[: vocab.vocab_size])
            tok = int(rng.choice(allowed))
            if tok == STOP:
                break
            history.append(tok)
            assert m.advance(tok)
        warm = grammar.matcher()
        fresh_vocab = TokenVocabulary(vocab.tables, (STOP,), "fresh")
        cold_grammar = CompiledGrammar(compile_schema_automaton(schema), fresh_vocab)
        for tok in history:
            hit, cold = allocate_token_bitmask(vocab.vocab_size), allocate_token_bitmask(vocab.vocab_size)
            warm.fill_next_token_bitmask(hit)
            cold_m = cold_grammar.matcher()
            for t in history[: warm.num_accepted]:
                assert cold_m.advance(t)
            cold_m.fill_next_token_bitmask(cold)
            np.testing.assert_array_equal(hit, cold)
            assert warm.advance(tok)


def test_public_fill_kernel_with_rows_equals_matcher(vocab):
    """The checked entry point (string rows and class row added inside) gives the matcher's masks."""
    from realizar_ort.kernels.token_mask import fill_next_token_bitmask

    grammar = compile_json_schema(CLASS_SCHEMAS[0], vocab)
    rng = np.random.default_rng(2)
    m = grammar.matcher()
    for _step in range(30):
        expect = allocate_token_bitmask(vocab.vocab_size)
        m.fill_next_token_bitmask(expect)
        expect.view(np.uint32)[STOP >> 5] &= np.uint32(~(1 << STOP) & 0xFFFFFFFF)
        q = m._state
        got = allocate_token_bitmask(vocab.vocab_size)
        groups = grammar._class_groups_l[q]
        chars = grammar.excluded_chars.get(q, ())
        without = vocab.text_row_without(0, chars) if chars else None  # '.' refusing U+2028: tokens holding one
        excluded = None if without is None else ~without & vocab.text_upto[-1]
        fill_next_token_bitmask(vocab.vocab_arrays, grammar.automaton_arrays, q, m._counter, m._stack, m._stack_len,
                                grammar.max_depth, m._scratch, got, True, groups, grammar._class_exit_l[q],
                                excluded)
        if groups:
            np.bitwise_or(got, vocab.class_row(groups, grammar._class_len_l[q]), out=got)
        np.testing.assert_array_equal(got, expect)
        allowed = m.allowed_token_ids()
        tok = int(rng.choice(allowed))
        if tok == STOP:
            break
        assert m.advance(tok)


LITERAL_SCHEMAS = [
    {"anyOf": [{"type": "object", "properties": {"name": {"const": "get_weather"}, "e": {"type": "string"}},
                "required": ["name", "e"], "additionalProperties": False},
               {"type": "object", "properties": {"name": {"const": "send"}, "d": {"type": "integer"}},
                "required": ["name", "d"], "additionalProperties": False}]},
    CLASS_SCHEMAS[0],
    CLASS_SCHEMAS[4],  # recursive: literal states inside a called rule, masks after a return
    {"type": "array", "items": {"type": "object", "properties": {"ok": {"type": "boolean"}, "v": {"enum": ["ab", 7]}},
                                "required": ["ok"], "additionalProperties": False}, "maxItems": 4},
]


@pytest.mark.parametrize(("schema", "max_depth"), [(s, 64) for s in LITERAL_SCHEMAS] + [(LITERAL_SCHEMAS[2], 2)],
                         ids=lambda s: str(s)[:40])
def test_literal_state_sparse_masks_equal_reference_along_random_walks(vocab, schema, max_depth, reference_mask):
    """Literal states (a key's characters, punctuation) get their masks from the sparse table built at
    compile time: each one visited on random walks equals the token-by-token reference, with whatever stack
    (also at the deepest stack a grammar allows, where a token that would push is refused); so does every
    other state's mask on the same walks."""
    if max_depth <= 2:  # tokens that enter a call (push) from a literal state: refused at the deepest stack
        vocab = TokenVocabulary.from_token_bytes(class_vocab() + [b'[{"', b'":[{"', b'[{', b'k":[{"v":'], (STOP,))
    grammar = compile_json_schema(schema, vocab, max_depth=max_depth)
    literal = grammar._mask_cache.literal
    assert sum(x is not None for x in literal) >= 3, "the schema should have literal states"
    rng = np.random.default_rng(17)
    token_bytes = [vocab.token_bytes(i) or None for i in range(vocab.vocab_size)]
    visited = 0
    for _walk in range(8 if max_depth > 2 else 40):
        m = grammar.matcher()
        for _step in range(30):
            got = allocate_token_bitmask(vocab.vocab_size)
            m.fill_next_token_bitmask(got)
            # every state, also where a token's pushes would pass max_depth (at max_depth 2: masks are computed
            # fresh there instead of taken from entries cached at a shallower stack)
            expect = reference_mask(m, grammar, token_bytes, STOP)
            np.testing.assert_array_equal(got, expect)
            visited += literal[m._state] is not None
            allowed = np.flatnonzero(np.unpackbits(expect.view(np.uint8), bitorder="little")[: vocab.vocab_size])
            tok = int(rng.choice(allowed))
            if tok == STOP:
                break
            assert m.advance(tok)
    assert visited > 5


@pytest.mark.parametrize("schema", LITERAL_SCHEMAS, ids=lambda s: str(s)[:40])
def test_every_literal_state_sparse_mask_equals_the_dense_kernel(vocab, schema):
    """Every literal state's sparse mask equals the dense kernel from the start configuration, and no state
    whose walk reads or pushes the stack is in the table."""
    from realizar_ort.kernels.token_mask import fill_next_token_bitmask

    grammar = compile_json_schema(schema, vocab)
    m = grammar.matcher()
    for q, entry in enumerate(grammar._mask_cache.literal):
        if entry is None:
            continue
        words, values, lo, hi = entry
        sparse = allocate_token_bitmask(vocab.vocab_size)
        sparse[words[lo:hi]] = values[lo:hi]
        dense = allocate_token_bitmask(vocab.vocab_size)
        read = fill_next_token_bitmask(vocab.vocab_arrays, grammar.automaton_arrays, q, 0, m._stack, 0, 4,
                                       m._scratch, dense)
        assert read == 0
        np.testing.assert_array_equal(sparse, dense)


@pytest.mark.parametrize("schema", ["any_object", "any_json"])
def test_generic_json_grammars_start_from_the_vocabulary_masks_and_equal_reference(vocab, schema, reference_mask):
    """A generic JSON grammar starts with the masks its vocabulary computed at load (its cache is not empty
    before the first step); each mask along random walks equals the token-by-token reference."""
    grammar = CompiledGrammar(compile_schema_automaton(schema), vocab)
    seeded = len(grammar._mask_cache.masks)
    assert seeded > 10
    assert not CompiledGrammar(compile_schema_automaton(CLASS_SCHEMAS[0]), vocab)._mask_cache.masks
    rng = np.random.default_rng(23)
    token_bytes = [vocab.token_bytes(i) or None for i in range(vocab.vocab_size)]
    for _walk in range(8):
        m = grammar.matcher()
        for _step in range(40):
            got = allocate_token_bitmask(vocab.vocab_size)
            m.fill_next_token_bitmask(got)
            np.testing.assert_array_equal(got, reference_mask(m, grammar, token_bytes, STOP))
            tok = int(rng.choice(m.allowed_token_ids()))
            if tok == STOP:
                break
            assert m.advance(tok)
