"""The mask fast paths (character-class rows and subtree skipping, first-byte table, mask caches) on the
real Llama 3.2 vocabulary, against the token-by-token reference."""

from __future__ import annotations

import json

import numpy as np
import pytest
from realizar_ort.kernels.token_mask import fill_next_token_bitmask_reference
from tokenizers import Tokenizer

from realizar_ort.grammar.json_schema import compile_schema_automaton
from realizar_ort.grammar.matcher import CompiledGrammar, TokenVocabulary, allocate_token_bitmask

MODEL_VOCAB = 128256
EOT = 128009
SCHEMA = {"type": "object", "properties": {
    "owner": {"type": "object", "properties": {"email": {"type": "string", "format": "email"}},
              "required": ["email"], "additionalProperties": False},
    "scores": {"type": "array", "items": {"type": "number"}}},
    "required": ["owner", "scores"], "additionalProperties": False}
VALUE = {"owner": {"email": "grace.hopper@example.com"}, "scores": [12.5, -3]}


@pytest.fixture(scope="module")
def vocab(llama3_tokenizer_json, tmp_path_factory) -> TokenVocabulary:
    mp = pytest.MonkeyPatch()
    mp.setenv("REALIZAR_ORT_CACHE", str(tmp_path_factory.mktemp("vocab-cache")))
    try:
        return TokenVocabulary.from_tokenizer_file(llama3_tokenizer_json, MODEL_VOCAB, (EOT,))
    finally:
        mp.undo()


@pytest.mark.slow
def test_class_states_equal_reference_on_real_vocab(vocab, llama3_tokenizer_json):
    hf = Tokenizer.from_file(str(llama3_tokenizer_json))
    ids = hf.encode(json.dumps(VALUE, separators=(",", ":")), add_special_tokens=False).ids
    grammar = CompiledGrammar(compile_schema_automaton(SCHEMA), vocab)
    token_bytes = [vocab.token_bytes(i) or None for i in range(MODEL_VOCAB)]
    m = grammar.matcher()
    checked = []
    for tid in ids:
        q = m._state
        if grammar._class_groups_l[q] and q not in checked:  # in the email's local part, domain, and numbers
            got = allocate_token_bitmask(MODEL_VOCAB)
            m.fill_next_token_bitmask(got)
            expect = allocate_token_bitmask(MODEL_VOCAB)
            fill_next_token_bitmask_reference(token_bytes, grammar.automaton_arrays, q, m._counter,
                                              [int(x) for x in m._stack[: m._stack_len]], grammar.max_depth, expect)
            np.testing.assert_array_equal(got, expect)
            checked.append(q)
        assert m.advance(tid)
    assert len(checked) >= 4


def test_forced_instance_masks_equal_with_and_without_caches(vocab, llama3_tokenizer_json):
    """Each mask along a forced instance: a cold grammar and vocabulary object vs a second matcher that
    only hits caches (the class rows, the walks and the whole masks)."""
    hf = Tokenizer.from_file(str(llama3_tokenizer_json))
    ids = hf.encode(json.dumps(VALUE, separators=(",", ":")), add_special_tokens=False).ids
    first = CompiledGrammar(compile_schema_automaton(SCHEMA), TokenVocabulary(vocab.tables, (EOT,), "cold"))
    cold_masks = []
    m = first.matcher()
    for tid in ids + [EOT]:
        mask = allocate_token_bitmask(MODEL_VOCAB)
        m.fill_next_token_bitmask(mask)
        cold_masks.append(mask)
        assert m.advance(tid)
    warm = first.matcher()
    for tid, cold in zip(ids + [EOT], cold_masks, strict=True):
        mask = allocate_token_bitmask(MODEL_VOCAB)
        warm.fill_next_token_bitmask(mask)
        np.testing.assert_array_equal(mask, cold)
        assert warm.advance(tid)
    assert warm.is_terminated()


STRING_SCHEMA = {"type": "object", "properties": {
    "title": {"type": "string", "minLength": 2, "maxLength": 60},
    "notes": {"type": "array", "items": {"type": "string"}}},
    "required": ["title", "notes"], "additionalProperties": False}
STRING_VALUES = [(STRING_SCHEMA, {"title": "Fix the \"login\" loop", "notes": ["a\\b", "café", "x"]}),
                 ("any_object", {"user": {"name": "Ada", "tags": ["en", "fr"]}, "k": "v \u00e9"})]


@pytest.mark.slow
@pytest.mark.parametrize(("schema", "value"), STRING_VALUES, ids=["bounded+free", "any_object"])
def test_string_states_with_suffix_tries_equal_reference_on_real_vocab(vocab, llama3_tokenizer_json, schema, value):
    """String bodies walk the suffix tries (tokens keyed by what follows their leading plain bytes): every mask
    along the instance equals the same grammar without them, and the first few equal the reference."""
    from realizar_ort.kernels.token_mask import S_SUFFIX

    hf = Tokenizer.from_file(str(llama3_tokenizer_json))
    ids = hf.encode(json.dumps(value, separators=(",", ":"), ensure_ascii=False), add_special_tokens=False).ids
    grammar = CompiledGrammar(compile_schema_automaton(schema), vocab)
    plain = CompiledGrammar(compile_schema_automaton(schema), vocab)
    plain.automaton_arrays[2][:, S_SUFFIX] = 0
    info = grammar.automaton_arrays[2]
    token_bytes = [vocab.token_bytes(i) or None for i in range(MODEL_VOCAB)]
    a, b = grammar.matcher(), plain.matcher()
    referenced = 0
    for tid in ids + [EOT]:
        got, other = allocate_token_bitmask(MODEL_VOCAB), allocate_token_bitmask(MODEL_VOCAB)
        a.fill_next_token_bitmask(got)
        b.fill_next_token_bitmask(other)
        np.testing.assert_array_equal(got, other)
        q = a._state
        if info[q, S_SUFFIX] != 0 and referenced < 2:  # the reference reads all 128k tokens in Python
            expect = allocate_token_bitmask(MODEL_VOCAB)
            fill_next_token_bitmask_reference(token_bytes, grammar.automaton_arrays, q, a._counter,
                                              [int(x) for x in a._stack[: a._stack_len]], grammar.max_depth, expect)
            np.testing.assert_array_equal(got, expect)
            referenced += 1
        assert a.advance(tid) and b.advance(tid)
    assert referenced >= 1 and a.is_terminated()
