"""GrammarMatcher / JsonGrammar behaviour and the two soundness properties, on a hand-built vocabulary.

Property 1 (no invalid outputs): sampling at random from the masked vocabulary always ends in text that
parses and validates (``jsonschema``). Property 2 (no false rejections): a valid instance, serialised
compactly and tokenised, is allowed at every step. hypothesis-jsonschema 0.23.1 crashes on object schemas
with hypothesis 6.170 (``'many' object has no attribute 'more'``), so :func:`instances` below draws valid
instances for the keyword subset these schemas use; every drawn instance is checked with ``jsonschema``.
"""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realizar_ort.generation.logits import LogitProcessor
from realizar_ort.grammar.matcher import (
    GrammarError,
    JsonGrammar,
    TokenVocabulary,
    UnsupportedSchemaError,
    allocate_token_bitmask,
    compile_json_schema,
)

STOP = 1
SPECIAL = 0
MULTI = [b'{"', b'":', b'",', b'"}', b'"]', b'["', b'[{', b'}]', b']}', b'},{', b'abc', b'12', b'-1', b'.5',
         b'e+', b'true', b'null', b'false', b'\\n', b'\\"', b'\\u00', b'"name":"', b'":"', b'":[', b'":{',
         b'\xc3\xa9', b'\xe2\x98', b'\x83', b'caf\xc3\xa9', b'1,', b'0]', b'"}]', b'}}', b'get_weather',
         b'"get_weather"', b'arguments', b'city', b'Paris', b'2024-', b'-01']


def hand_vocab() -> list[bytes | None]:
    toks: list[bytes | None] = [None, None]  # 0: a special token, 1: the stop token
    toks += [bytes([b]) for b in range(0x20, 0x7F)] + [bytes([b]) for b in range(0x80, 0x100)]
    toks += [b"\n", b"\t", b"\x01"] + MULTI
    return toks


VOCAB = TokenVocabulary.from_token_bytes(hand_vocab(), stop_token_ids=(STOP,))
ID_OF = {raw: i for i, raw in enumerate(hand_vocab()) if raw is not None and len(raw) == 1}


def byte_ids(text: str) -> list[int]:
    return [ID_OF[bytes([b])] for b in text.encode("utf-8")]


WEATHER = {"type": "object", "properties": {"city": {"type": "string"},
                                            "unit": {"enum": ["celsius", "fahrenheit"]},
                                            "days": {"type": "integer", "minimum": 1, "maximum": 14}},
           "required": ["city"], "additionalProperties": False}
TOOL_CALL = {"anyOf": [
    {"type": "object", "properties": {"name": {"const": "get_weather"}, "arguments": WEATHER},
     "required": ["name", "arguments"], "additionalProperties": False},
    {"type": "object", "properties": {"name": {"const": "search"}, "arguments": {
        "type": "object", "properties": {"q": {"type": "string", "maxLength": 20}}, "required": ["q"],
        "additionalProperties": False}}, "required": ["name", "arguments"], "additionalProperties": False},
]}
SCHEMAS = {
    "any_json": {},
    "tool_call": TOOL_CALL,
    "parallel_calls": {"type": "array", "items": TOOL_CALL, "minItems": 1, "maxItems": 3},
    "nested": {"type": "object", "properties": {
        "id": {"type": "string", "pattern": "^[a-z]{2,4}-[0-9]+$"},
        "tags": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 4}, "maxItems": 3},
        "kind": {"enum": ["a", "b", None]},
        "score": {"type": "number", "minimum": 0},
        "when": {"type": "string", "format": "date"},
        "extra": {"type": ["boolean", "null"]}},
        "required": ["id", "kind"], "additionalProperties": False},
    "bounded_strings": {"type": "array", "items": {"type": "string", "minLength": 3, "maxLength": 7},
                        "minItems": 2, "maxItems": 2},
    "tree": {"$defs": {"n": {"type": "object", "properties": {"v": {"type": "integer"}, "c": {
        "type": "array", "items": {"$ref": "#/$defs/n"}, "maxItems": 2}}, "required": ["v"],
        "additionalProperties": False}}, "$ref": "#/$defs/n"},
    "extras": {"type": "object", "properties": {"a": {"type": "integer"}},
               "additionalProperties": {"type": "string", "maxLength": 3}},
}
PREFERRED = [b'"', b"}", b"]", b"0", b"1", b"a", b"null", b"-", b"2"]


def sample(grammar, rng: np.random.Generator, max_steps: int = 300) -> bytes | None:
    """Random tokens from the mask; after 60 steps prefer closers so the value finishes."""
    m = grammar.matcher()
    out = b""
    for step in range(max_steps):
        allowed = m.allowed_token_ids()
        assert allowed.size > 0, f"dead end after {out!r}"
        assert SPECIAL not in allowed
        tok = int(rng.choice(allowed))
        if step > 60:
            allowed_set = set(allowed.tolist())
            if STOP in allowed_set:
                tok = STOP
            else:
                for raw in PREFERRED:
                    if ID_OF.get(raw) in allowed_set:
                        tok = ID_OF[raw]
                        break
        assert m.advance(tok)
        if tok == STOP:
            assert m.is_terminated()
            return out
        out += VOCAB.token_bytes(tok)
    return None


@pytest.mark.parametrize("name", list(SCHEMAS))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_random_masked_sampling_always_validates(name, seed):
    schema = SCHEMAS[name]
    grammar = compile_json_schema(schema, VOCAB)
    text = sample(grammar, np.random.default_rng(seed))
    assert text is not None, "did not finish within 300 tokens"
    value = json.loads(text.decode("utf-8"))
    jsonschema.validate(value, schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def instances(schema, root=None):
    """A hypothesis strategy of values valid for ``schema`` (the subset used in this file)."""
    root = schema if root is None else root
    if schema is True or schema == {}:
        leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(max_size=8),
                         st.floats(allow_nan=False, allow_infinity=False))
        return st.recursive(leaf, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                          st.dictionaries(st.text(max_size=5), kids, max_size=3)),
                            max_leaves=8)
    if "$ref" in schema:
        node = root
        for part in schema["$ref"][2:].split("/"):
            node = node[part]
        return st.deferred(lambda: instances(node, root))
    if "anyOf" in schema:
        return st.one_of(*[instances(alt, root) for alt in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    t = schema.get("type")
    if isinstance(t, list):
        return st.one_of(*[instances({**schema, "type": x}, root) for x in t])
    if t == "null":
        return st.none()
    if t == "boolean":
        return st.booleans()
    if t == "integer":
        return st.integers(schema.get("minimum", -10**9), schema.get("maximum", 10**9))
    if t == "number":
        return st.floats(min_value=schema.get("minimum"), allow_nan=False, allow_infinity=False)
    if t == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        if schema.get("format") == "date":
            return st.dates().map(lambda d: d.isoformat())
        return st.text(min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 12))
    if t == "array":
        return st.lists(instances(schema.get("items", {}), root), min_size=schema.get("minItems", 0),
                        max_size=schema.get("maxItems", 4))
    if t == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        extra = schema.get("additionalProperties", not props)

        @st.composite
        def objects(draw):
            out = {}
            for k, sub in props.items():
                if k in required or draw(st.booleans()):
                    out[k] = draw(instances(sub, root))
            if extra is not False:
                for k in draw(st.lists(st.text(max_size=5).filter(lambda k: k not in props), max_size=2, unique=True)):
                    out[k] = draw(instances(extra, root))
            return out

        return objects()
    raise AssertionError(f"no strategy for {schema}")


def longest_whitespace_outside_strings(text: bytes) -> int:
    longest = run = 0
    in_string = escaped = False
    for b in text:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:
                escaped = True
            elif b == 0x22:
                in_string = False
            continue
        run = run + 1 if b in b" \t\n" else 0
        longest = max(longest, run)
        in_string = b == 0x22
    return longest


@pytest.mark.parametrize("name", ["tool_call", "any_json"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_sampling_with_bounded_whitespace_validates(name, seed):
    schema = SCHEMAS[name]
    grammar = compile_json_schema(schema, VOCAB, whitespace=2)
    text = sample(grammar, np.random.default_rng(seed))
    assert text is not None, "did not finish within 300 tokens"
    assert longest_whitespace_outside_strings(text) <= 2
    jsonschema.validate(json.loads(text.decode("utf-8")), schema)


def order_like_schema(value, schema):
    """Known properties in schema order, then the rest (our grammar's order)."""
    if isinstance(value, dict) and isinstance(schema, dict):
        props = schema.get("properties", {})
        known = [k for k in props if k in value]
        extra = [k for k in value if k not in props]
        return {k: order_like_schema(value[k], props.get(k, {})) for k in known + extra}
    if isinstance(value, list) and isinstance(schema, dict) and isinstance(schema.get("items"), dict):
        return [order_like_schema(v, schema["items"]) for v in value]
    return value


@pytest.mark.parametrize("name", ["tool_call", "parallel_calls", "nested", "bounded_strings", "extras", "any_json"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_valid_instances_are_allowed_at_every_step(name, data):
    schema = SCHEMAS[name]
    value = data.draw(instances(schema))
    jsonschema.validate(value, schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    if name == "nested" and "when" in value and value["when"][5:] == "02-29":
        return  # we allow February up to the 28th (sound for every year)
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    try:
        ids = byte_ids(text)
    except (KeyError, UnicodeEncodeError):
        return  # lone surrogates cannot be UTF-8 text
    grammar = compile_json_schema(schema, VOCAB)
    m = grammar.matcher()
    mask = allocate_token_bitmask(VOCAB.vocab_size)
    for i, tid in enumerate(ids + [STOP]):
        m.fill_next_token_bitmask(mask)
        assert (mask.view(np.uint32)[tid >> 5] >> np.uint32(tid & 31)) & 1, f"rejected at byte {i} of {text!r}"
        assert m.advance(tid)
    assert m.is_terminated()


def test_matcher_error_state_rollback_and_stop():
    grammar = compile_json_schema({"type": "array", "items": {"type": "integer"}}, VOCAB)
    m = grammar.matcher()
    for tid in byte_ids("[1"):
        assert m.advance(tid)
    assert not m.is_accepting()
    assert not m.advance(STOP) and m.is_error
    assert m.allowed_token_ids().tolist() == [STOP]
    m.rollback(1)
    assert not m.is_error and m.num_accepted == 1
    assert m.advance(ID_OF[b"2"]) and m.advance(ID_OF[b"]"])
    assert m.is_accepting() and m.allowed_token_ids().tolist() == [STOP]
    assert not m.advance(SPECIAL) and m.is_error
    m.rollback(0)
    assert m.advance(STOP) and m.is_terminated()
    assert not m.advance(ID_OF[b"1"])
    with pytest.raises(ValueError, match="cannot roll back 9 tokens: 4 accepted"):
        m.rollback(9)


def test_special_tokens_never_allowed_inside_strings():
    grammar = compile_json_schema({"type": "string"}, VOCAB)
    m = grammar.matcher()
    m.advance(ID_OF[b'"'])
    allowed = set(m.allowed_token_ids().tolist())
    assert SPECIAL not in allowed and STOP not in allowed
    assert ID_OF[b"\n"] not in allowed and ID_OF[b"a"] in allowed


def test_number_may_continue_or_stop():
    m = compile_json_schema({"type": "integer"}, VOCAB).matcher()
    m.advance(ID_OF[b"4"])
    allowed = set(m.allowed_token_ids().tolist())
    assert STOP in allowed and ID_OF[b"2"] in allowed and ID_OF[b"."] not in allowed


def test_json_grammar_is_a_logit_processor_and_masks_in_place():
    grammar = compile_json_schema({"type": "boolean"}, VOCAB)
    proc = JsonGrammar(grammar)
    assert isinstance(proc, LogitProcessor)
    logits = np.zeros(VOCAB.vocab_size, dtype=np.float32)
    proc.process([], logits)
    finite = set(np.flatnonzero(np.isfinite(logits)).tolist())
    assert finite == {ID_OF[b"t"], ID_OF[b"f"], hand_vocab().index(b"true"), hand_vocab().index(b"false")}
    ids = [hand_vocab().index(b"true")]
    logits[:] = 0
    proc.process(ids, logits)
    assert set(np.flatnonzero(np.isfinite(logits)).tolist()) == {STOP}
    logits[:] = 0
    proc.process(ids + [ID_OF[b"x"]], logits)  # a disallowed token: error state, only stop remains
    assert proc.is_error and set(np.flatnonzero(np.isfinite(logits)).tolist()) == {STOP}


def test_compile_cache_and_errors():
    a = compile_json_schema(WEATHER, VOCAB)
    assert compile_json_schema(WEATHER, VOCAB) is a
    assert compile_json_schema(WEATHER, VOCAB, whitespace=1) is not a
    with pytest.raises(UnsupportedSchemaError, match="'multipleOf'"):
        compile_json_schema({"type": "integer", "multipleOf": 2}, VOCAB)
    with pytest.raises(GrammarError, match="schema must be a dict"):
        compile_json_schema(3, VOCAB)  # type: ignore[arg-type]


def test_vocab_size_cuts_ids_and_validates_stops():
    v = TokenVocabulary.from_token_bytes(hand_vocab(), stop_token_ids=(STOP,), vocab_size=50)
    m = compile_json_schema("any_json", v).matcher()
    assert m.allowed_token_ids().max() < 50
    with pytest.raises(ValueError, match="stop token id 60 is outside the vocabulary"):
        TokenVocabulary.from_token_bytes(hand_vocab(), stop_token_ids=(60,), vocab_size=50)
