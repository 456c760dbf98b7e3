"""The numba mask kernels against their plain-numpy/Python references, on hand-built vocabularies."""

from __future__ import annotations

import numpy as np
import pytest
from realizar_ort.kernels.token_mask import (
    advance_token_bytes_reference,
    allocate_token_bitmask,
    apply_token_bitmask_inplace,
    apply_token_bitmask_inplace_batch,
    apply_token_bitmask_inplace_reference,
)

from realizar_ort.grammar.matcher import TokenVocabulary, compile_json_schema

STOP = 1

MULTI = [b'{"', b'":', b'",', b'"}', b'"]', b'["', b'[{', b'}]', b']}', b'},{', b'abc', b'ab', b'12', b'-1',
         b'.5', b'e+', b'true', b'null', b'false', b'\\n', b'\\"', b'\\u00', b'\\u', b'00', b'1f', b'"a"',
         b'name', b'"name":"', b'":"', b'":[', b'":{', b'  ', b'\n', b' "', b'\xc3\xa9', b'\xc3', b'\xa9',
         b'\xe2\x98', b'\x83', b'\xf0\x9f\x98\x80', b'caf\xc3\xa9', b'x"}', b'1,', b'0]', b'"}]', b'}}',
         b'\\uC', b'\\uD7', b'\\ud8', b'\\', b'\\u00e9"', b'\\/', b'\\x', b'a\\n"}']


def hand_vocab() -> list[bytes | None]:
    toks: list[bytes | None] = [None, None]  # 0: a special token, 1: the stop token
    toks += [bytes([b]) for b in range(0x20, 0x7F)] + [bytes([b]) for b in range(0x80, 0x100)] + [b"\t"]
    toks += MULTI
    toks.append(None)  # an added token in the middle
    toks += [b"x" * 40, b"\x01"]
    return toks


@pytest.fixture(scope="module")
def vocab() -> TokenVocabulary:
    return TokenVocabulary.from_token_bytes(hand_vocab(), stop_token_ids=(STOP,))


def test_allocate_shape_and_dtype():
    mask = allocate_token_bitmask(33)
    assert mask.dtype == np.int32 and mask.shape == (2,) and not mask.any()
    with pytest.raises(ValueError, match="vocab_size must be positive, got 0"):
        allocate_token_bitmask(0)


def test_apply_matches_reference():
    rng = np.random.default_rng(0)
    for vocab_size in (1, 31, 32, 33, 1000, 128256):
        words = (vocab_size + 31) // 32
        random_bits = rng.integers(-(2**31), 2**31, size=words, dtype=np.int64).astype(np.int32)
        # grammar-like masks: runs of all-clear and all-set words around a few mixed ones
        runs = rng.choice(np.array([0, -1, 0x00F0F0F1], dtype=np.int64), size=words, p=[0.7, 0.2, 0.1]).astype(np.int32)
        for mask in (random_bits, runs, np.zeros(words, np.int32), np.full(words, -1, np.int32)):
            logits = rng.standard_normal(vocab_size).astype(np.float32)
            expect = logits.copy()
            apply_token_bitmask_inplace_reference(expect, mask)
            apply_token_bitmask_inplace(logits, mask)
            np.testing.assert_array_equal(logits, expect)


def test_apply_batch_matches_reference_and_respects_indices():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((3, 100)).astype(np.float32)
    mask = rng.integers(-(2**31), 2**31, size=(3, 4), dtype=np.int64).astype(np.int32)
    expect = logits.copy()
    for r in (0, 2):
        apply_token_bitmask_inplace_reference(expect[r], mask[r])
    apply_token_bitmask_inplace_batch(logits, mask, indices=np.array([0, 2]))
    np.testing.assert_array_equal(logits, expect)


def test_apply_validates_inputs():
    with pytest.raises(TypeError, match="logits must be a float32 numpy array, got float64"):
        apply_token_bitmask_inplace(np.zeros(4), allocate_token_bitmask(4))
    with pytest.raises(ValueError, match="bitmask has 1 words, needs 2 for 33 logits"):
        apply_token_bitmask_inplace(np.zeros(33, np.float32), allocate_token_bitmask(4))
    with pytest.raises(TypeError, match="bitmask must be an int32 numpy array, got int64"):
        apply_token_bitmask_inplace(np.zeros(4, np.float32), np.zeros(1, np.int64))
    with pytest.raises(ValueError, match="logits must be 2-D"):
        apply_token_bitmask_inplace_batch(np.zeros(4, np.float32), allocate_token_bitmask(4))
    with pytest.raises(ValueError, match="bitmask batch 1 != logits batch 2"):
        apply_token_bitmask_inplace_batch(np.zeros((2, 4), np.float32), np.zeros((1, 1), np.int32))


SCHEMAS = [
    "any_json",
    {"type": "object", "properties": {"name": {"type": "string"}, "n": {"type": "integer"}},
     "required": ["name"], "additionalProperties": False},
    {"type": "array", "items": {"type": "string", "minLength": 2, "maxLength": 5}, "maxItems": 3},
    {"type": "object", "properties": {"code": {"type": "string", "pattern": "^[a-c]+x?$"},
                                      "when": {"type": "string", "format": "date"}},
     "additionalProperties": {"type": "number"}},
    {"$defs": {"t": {"type": "object", "properties": {"v": {"type": "integer"},
                                                      "kids": {"type": "array", "items": {"$ref": "#/$defs/t"}}},
                     "required": ["v"], "additionalProperties": False}}, "$ref": "#/$defs/t"},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda s: str(s)[:40])
def test_fill_kernel_equals_reference_along_random_walks(vocab, schema, reference_mask):
    grammar = compile_json_schema(schema, vocab)
    rng = np.random.default_rng(7)
    token_bytes = [vocab.token_bytes(i) or None for i in range(vocab.vocab_size)]
    arrays = grammar.automaton_arrays
    for _walk in range(4):
        m = grammar.matcher()
        for _step in range(40):
            got = allocate_token_bitmask(vocab.vocab_size)
            m.fill_next_token_bitmask(got)
            np.testing.assert_array_equal(got, reference_mask(m, grammar, token_bytes, STOP))
            stack = [int(x) for x in m._stack[: m._stack_len]]
            allowed = m.allowed_token_ids()
            assert allowed.size > 0
            tok = int(rng.choice(allowed))
            if tok == STOP:
                assert m.advance(tok) and m.is_terminated()
                break
            ref = advance_token_bytes_reference(arrays, token_bytes[tok], m._state, m._counter, stack,
                                                grammar.max_depth)
            assert m.advance(tok)
            assert ref is not None and ref[0] == m._state and ref[1] == m._counter
            assert ref[2] == [int(x) for x in m._stack[: m._stack_len]]
