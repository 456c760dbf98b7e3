"""The grammar on the real Llama 3.2 vocabulary (128,257 tokenizer ids, model width 128,256)."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from realizar_ort.kernels.token_mask import fill_next_token_bitmask_reference
from tokenizers import Tokenizer

from realizar_ort.grammar.matcher import TokenVocabulary, allocate_token_bitmask, compile_json_schema
from realizar_ort.grammar.vocab import token_bytes_from_tokenizer_json

MODEL_VOCAB = 128256
EOT, EOS = 128009, 128001

TOOLS = {"anyOf": [
    {"type": "object", "properties": {"name": {"const": "get_weather"}, "arguments": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 40},
                                         "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city"], "additionalProperties": False}},
     "required": ["name", "arguments"], "additionalProperties": False},
    {"type": "object", "properties": {"name": {"const": "send_email"}, "arguments": {
        "type": "object", "properties": {"to": {"type": "string", "format": "email"}, "body": {"type": "string"}},
        "required": ["to", "body"], "additionalProperties": False}},
     "required": ["name", "arguments"], "additionalProperties": False},
]}
CALL = {"name": "send_email", "arguments": {"to": "ada@example.com",
                                            "body": "Hi Ada,\n the \"numbers\" are in: 42 ✓ 😀 naïve café."}}


@pytest.fixture(scope="module")
def vocab(llama3_tokenizer_json, tmp_path_factory) -> TokenVocabulary:
    mp = pytest.MonkeyPatch()
    mp.setenv("REALIZAR_ORT_CACHE", str(tmp_path_factory.mktemp("vocab-cache")))
    try:
        return TokenVocabulary.from_tokenizer_file(llama3_tokenizer_json, MODEL_VOCAB, (EOT, EOS))
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def hf(llama3_tokenizer_json) -> Tokenizer:
    return Tokenizer.from_file(str(llama3_tokenizer_json))


def test_token_bytes_round_trip_text(vocab, hf):
    text = 'Ünïcödé {"a": [1, 2.5e-3]} 😀\n\ttabs and "quotes" \\ backslash ☃ 中文'
    ids = hf.encode(text, add_special_tokens=False).ids
    assert b"".join(vocab.token_bytes(i) for i in ids).decode("utf-8") == text
    assert vocab.vocab_size == MODEL_VOCAB


def test_added_tokens_have_no_bytes(llama3_tokenizer_json):
    data = json.loads(llama3_tokenizer_json.read_bytes())
    raw = token_bytes_from_tokenizer_json(data)
    assert len(raw) == 128257
    assert all(raw[int(t["id"])] is None for t in data["added_tokens"])
    assert sum(r is None for r in raw) == len({int(t["id"]) for t in data["added_tokens"]})


def test_special_tokens_never_allowed_inside_json(vocab, hf):
    grammar = compile_json_schema({"type": "object", "properties": {"s": {"type": "string"}}, "required": ["s"]},
                                  vocab)
    m = grammar.matcher()
    for tid in hf.encode('{"s":"abc', add_special_tokens=False).ids:
        assert m.advance(tid)
    allowed = m.allowed_token_ids()
    assert allowed.size > 100_000  # nearly the whole vocabulary is string text
    assert allowed.max() < 128000  # no special/added token, no id past the model width
    assert m.advance(hf.encode('"}', add_special_tokens=False).ids[0])


def force(grammar, ids):
    m = grammar.matcher()
    mask = allocate_token_bitmask(grammar.vocab.vocab_size)
    for i, tid in enumerate(ids):
        m.fill_next_token_bitmask(mask)
        assert (mask.view(np.uint32)[tid >> 5] >> np.uint32(tid & 31)) & 1, f"token {i} ({tid}) rejected"
        assert m.advance(tid)
    return m


def test_valid_tool_call_is_allowed_at_every_step(vocab, hf):
    grammar = compile_json_schema(TOOLS, vocab)
    text = json.dumps(CALL, ensure_ascii=False, separators=(",", ":"))
    m = force(grammar, hf.encode(text, add_special_tokens=False).ids)
    assert m.is_accepting()
    allowed = m.allowed_token_ids().tolist()
    assert allowed == [EOS, EOT]


@pytest.mark.slow
def test_kernel_equals_reference_on_real_vocab(vocab, hf):
    grammar = compile_json_schema(TOOLS, vocab)
    text = json.dumps(CALL, ensure_ascii=False, separators=(",", ":"))
    ids = hf.encode(text, add_special_tokens=False).ids
    token_bytes = [vocab.token_bytes(i) or None for i in range(MODEL_VOCAB)]
    m = grammar.matcher()
    checked = 0
    for step, tid in enumerate(ids):
        if step in (0, 3, 9, 14, len(ids) - 2):  # start, in a const, in the email, in free text, near the end
            got = allocate_token_bitmask(MODEL_VOCAB)
            m.fill_next_token_bitmask(got)
            expect = allocate_token_bitmask(MODEL_VOCAB)
            fill_next_token_bitmask_reference(token_bytes, grammar.automaton_arrays, m._state, m._counter,
                                              [int(x) for x in m._stack[: m._stack_len]], grammar.max_depth, expect)
            np.testing.assert_array_equal(got, expect)
            checked += 1
        assert m.advance(tid)
    assert checked == 5


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_random_sampling_on_real_vocab_validates(vocab, seed):
    schema = {"type": "array", "items": TOOLS, "minItems": 1, "maxItems": 2}
    grammar = compile_json_schema(schema, vocab)
    rng = np.random.default_rng(seed)
    m = grammar.matcher()
    out = b""
    for step in range(400):
        allowed = m.allowed_token_ids()
        # uniform at first; after 60 steps prefer tokens that close something so the value finishes
        tok = int(rng.choice(allowed))
        if step > 60:
            for wanted in (b'"}]', b"@", b"."):  # close what is open; in an email, head for the domain
                closers = [t for t in allowed.tolist()
                           if t >= 128000 or any(c in vocab.token_bytes(t) for c in wanted)]
                if closers:
                    tok = EOT if EOT in closers else int(rng.choice(closers))
                    break
        assert m.advance(tok)
        if m.is_terminated():
            break
        out += vocab.token_bytes(tok)
    assert m.is_terminated(), f"did not finish: {out[-200:]!r}"
    jsonschema.validate(json.loads(out.decode("utf-8")), schema,
                        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_smollm2_vocabulary_and_tool_call(smollm2_dir):
    """The same machinery on SmolLM2's GPT-2 style byte-level BPE (49,152 ids, stops from the manifest)."""
    from realizar_ort.manifest import load_manifest

    manifest = load_manifest(smollm2_dir)
    spec = manifest.llm
    vocab = TokenVocabulary.from_tokenizer_file(smollm2_dir / manifest.tokenizer_file, spec.vocab_size,
                                                tuple(spec.eos_token_ids))
    hf = Tokenizer.from_file(str(smollm2_dir / manifest.tokenizer_file))
    text = json.dumps(CALL, ensure_ascii=False, separators=(",", ":"))
    ids = hf.encode(text, add_special_tokens=False).ids
    assert b"".join(vocab.token_bytes(i) for i in ids).decode("utf-8") == text
    m = force(compile_json_schema(TOOLS, vocab), ids)
    special = set(manifest.special_tokens.values())
    assert set(m.allowed_token_ids().tolist()) == set(spec.eos_token_ids)
    m.rollback(3)
    assert not special & set(m.allowed_token_ids().tolist())
