"""Fast-forward: the forced-bytes kernel against its reference, and forced tokens on real vocabularies.

The property on the Llama 3 (128k) and SmolLM2 vocabularies: random masked generation with fast-forward
on, where every forced run is exactly what the tokenizer writes for its text (alone, and at the start of
everything generated from there on: no token the model could have written spans the run's end), and every
finished output still validates against its schema.
"""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realizar_ort.kernels.forced_bytes import (
    FORCED_CHOICE,
    FORCED_DEAD,
    FORCED_FULL,
    FORCED_STOP,
    forced_bytes_reference,
)

from realizar_ort.grammar.forced import ForcedTokenizer, TokenIndex
from realizar_ort.grammar.matcher import JsonGrammar, TokenVocabulary, compile_json_schema
from realizar_ort.tokenizer import Tokenizer

WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 12},
    "unit": {"enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 14}},
    "required": ["city", "unit"], "additionalProperties": False}
TOOL_CALL = {"anyOf": [
    {"type": "object", "properties": {"name": {"const": "get_weather"}, "parameters": WEATHER},
     "required": ["name", "parameters"], "additionalProperties": False},
    {"type": "object", "properties": {"name": {"const": "get_time"}, "parameters": {
        "type": "object", "properties": {"timezone": {"type": "string", "maxLength": 10}},
        "required": ["timezone"], "additionalProperties": False}},
     "required": ["name", "parameters"], "additionalProperties": False},
    {"type": "object", "properties": {"name": {"const": "search_documents"}, "parameters": {
        "type": "object", "properties": {"query": {"type": "string", "maxLength": 16},
                                         "limit": {"type": "integer", "minimum": 1, "maximum": 50}},
        "required": ["query"], "additionalProperties": False}},
     "required": ["name", "parameters"], "additionalProperties": False},
]}
SCHEMAS = {
    "tool_call": TOOL_CALL,
    "nested": {"type": "object", "properties": {
        "orderId": {"type": "string", "maxLength": 6},
        "orderName": {"type": "string", "maxLength": 6},
        "name_of_the_person": {"type": "string", "maxLength": 8},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "greenish"]}, "maxItems": 3},
        "kind": {"enum": ["alpha", "beta", None]},
        "café": {"type": "boolean"},
        "when": {"type": "string", "format": "date"}},
        "required": ["name_of_the_person", "kind", "café"], "additionalProperties": False},
    "tree": {"$defs": {"n": {"type": "object", "properties": {"value": {"type": "integer", "minimum": 0, "maximum": 99},
                                                               "children": {"type": "array", "items": {
                                                                   "$ref": "#/$defs/n"}, "maxItems": 2}},
                             "required": ["value", "children"], "additionalProperties": False}},
             "$ref": "#/$defs/n"},
}
CLOSERS = [b'"', b"}", b"]", b'"}', b"0", b"1", b"null", b"a"]


# ------------------------------------------------------------------------------------ kernel vs reference
def _tiny_vocab() -> TokenVocabulary:
    toks: list[bytes | None] = [None, None] + [bytes([b]) for b in range(0x20, 0x7F)]
    toks += [bytes([b]) for b in range(0x80, 0x100)] + [b'":"', b'{"', b'name', b'","', b"true"]
    return TokenVocabulary.from_token_bytes(toks, stop_token_ids=(1,))


TINY = _tiny_vocab()


@pytest.mark.parametrize("name", list(SCHEMAS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_forced_bytes_kernel_matches_reference(name, seed):
    grammar = compile_json_schema(SCHEMAS[name], TINY)
    matcher = grammar.matcher()
    rng = np.random.default_rng(seed)
    out = np.zeros(24, dtype=np.uint8)
    nxt = np.zeros(256, dtype=bool)
    for _ in range(80):
        n, why = matcher.forced_bytes(out, nxt)
        stack = matcher._stack[: matcher._stack_len].tolist()
        ref, ref_why, ref_next = forced_bytes_reference(grammar.automaton_arrays, matcher._state, matcher._counter,
                                                        stack, grammar.max_depth, out.shape[0])
        assert (out[:n].tobytes(), why) == (ref, ref_why)
        assert set(np.flatnonzero(nxt).tolist()) == ref_next
        if why == FORCED_STOP or why == FORCED_DEAD:
            return
        allowed = matcher.allowed_token_ids()
        assert why != FORCED_FULL or n == out.shape[0]
        if why == FORCED_CHOICE and n == 0:
            assert len(allowed) >= 1
        assert matcher.advance(int(rng.choice(allowed)))
        if matcher.is_terminated():
            return


def test_forced_bytes_stop_only_and_choice():
    grammar = compile_json_schema({"enum": ["greenish", "green"]}, TINY)
    m = grammar.matcher()
    out = np.zeros(32, dtype=np.uint8)
    nxt = np.zeros(256, dtype=bool)
    assert m.forced_bytes(out, nxt) == (6, FORCED_CHOICE)  # "green then '"' or 'i'
    assert out[:6].tobytes() == b'"green' and set(np.flatnonzero(nxt)) == {ord('"'), ord("i")}
    for b in b'"green"':
        assert m.advance(2 + b - 0x20)
    assert m.forced_bytes(out, nxt) == (0, FORCED_STOP)
    assert m.forced_bytes(out[:2], nxt) == (0, FORCED_STOP)
    m2 = grammar.matcher()
    assert m2.forced_bytes(out[:3], nxt) == (3, FORCED_FULL)
    assert not m2.accepts_bytes(np.frombuffer(b'"red', dtype=np.uint8))
    assert m2.accepts_bytes(np.frombuffer(b'"greeni', dtype=np.uint8))
    assert m2.num_accepted == 0  # neither moved the matcher


def test_token_index_ranges():
    index = TokenIndex.of(TINY)
    lo, hi = index.starting_with(b'"')
    assert sorted(index.keys[lo:hi]) == [b'"', b'","', b'":"']
    lo, hi = index.starting_with(b"\xff")
    assert index.keys[lo:hi] == [b"\xff"]
    assert TokenIndex.of(TINY) is index


# ------------------------------------------------------------------------------------ real vocabularies
@pytest.fixture(scope="module", params=["llama3", "smollm2"])
def real(request, llama3_tokenizer_json, smollm2_dir):
    path = llama3_tokenizer_json if request.param == "llama3" else smollm2_dir / "tokenizer.json"
    tok = Tokenizer.from_file(path)
    stop = tok.token_id("<|eot_id|>") if request.param == "llama3" else tok.token_id("<|im_end|>")
    vocab = TokenVocabulary.from_tokenizer_file(path, stop_token_ids=(stop,))
    return tok, vocab, ForcedTokenizer(vocab, tok, healing=True), stop


def _generate(schema, tok, vocab, forcer, stop, rng, max_steps=120):
    """Random masked generation with fast-forward, as the scheduler runs it (``healed_forced_tokens`` after
    a sampled token, ``forced_tokens`` at the start): (generated ids, forced runs as (start, ids, healed),
    done, deferred). ``healed``: the run replaced the sampled token before it (it starts at that token's
    place); True, False after a sampled token it kept, None after no sampled token (at the start, or after a
    forced run). ``deferred``: the positions where a run was left to the model to start (model-led starts)."""
    jg = JsonGrammar(compile_json_schema(schema, vocab), forcer)
    gen: list[int] = []
    runs: list[tuple[int, list[int], bool | None]] = []
    deferred: list[int] = []
    closers = [i for i in (tok.encode(c.decode()) for c in CLOSERS) if len(i) == 1]
    sampled = False
    for step in range(max_steps):
        drop, forced = jg.healed_forced_tokens(gen, 64) if sampled else (0, jg.forced_tokens(gen, 64))
        assert drop in (0, 1) and (forced or not drop)
        if forced:
            del gen[len(gen) - drop:]
            runs.append((len(gen), forced, bool(drop) if sampled else None))
            gen += forced
            sampled = False
            if forced[-1] == stop:
                return gen, runs, True, deferred
            continue
        jg._catch_up(gen)
        if (sampled or not gen) and jg.fast_forward.tokens(64):  # forced, but the model picks how it starts
            deferred.append(len(gen))
        m = jg.matcher
        jg._catch_up(gen)
        assert not m.is_error, tok.decode(gen)
        allowed = m.allowed_token_ids()
        token = int(rng.choice(allowed))
        if step > 50:
            preferred = [t[0] for t in closers if t[0] in set(allowed.tolist())]
            token = stop if stop in set(allowed.tolist()) else (preferred[0] if preferred else token)
        gen.append(token)
        sampled = True
        if token == stop:
            return gen, runs, True, deferred
    return gen, runs, False, deferred


def _spell(vocab, ids):
    return b"".join(vocab.token_bytes(i) for i in ids)


@pytest.mark.parametrize("healing", [True, False], ids=["healing", "model-led"])
@pytest.mark.parametrize("name", list(SCHEMAS))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_forced_runs_are_canonical_and_outputs_validate(real, name, healing, seed):
    """Every forced run is what the tokenizer writes for its text, alone and at the start of the rest (no
    token the model could write spans its end). With token healing, where a sampled token comes before it,
    that token and the run are what the tokenizer writes for their bytes together (a run that replaced the
    sampled token is canonical on its own and spells that token's bytes first). With model-led starts
    (the default), a run after a sampled token comes only right after the model picked its first token."""
    tok, vocab, _, stop = real
    forcer = ForcedTokenizer(vocab, tok, healing=healing)
    schema = SCHEMAS[name]
    gen, runs, done, deferred = _generate(schema, tok, vocab, forcer, stop, np.random.default_rng(seed))
    assert done, f"did not finish: {tok.decode(gen)!r}"
    assert runs, "nothing was forced"
    body = gen[:-1] if gen[-1] == stop else gen
    text = _spell(vocab, body)
    jsonschema.validate(json.loads(text), schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    for start, run, healed in runs:
        ids = [i for i in run if i != stop]
        if not ids:
            continue
        assert gen[start:start + len(run)] == run
        spelled = _spell(vocab, ids)
        assert tok.encode(spelled.decode("utf-8")) == ids  # what the tokenizer writes for the run's text
        rest = _spell(vocab, body[start:])
        assert tok.encode(rest.decode("utf-8"))[: len(ids)] == ids, (spelled, rest)  # nothing spans its end
        if healed is not None and not healing:  # the model picked the token before it, where it was deferred
            assert healed is False
            assert start - 1 in deferred, (start, deferred)
        if healed is False and healing:  # the sampled token before it stays: with the run, what the tokenizer writes
            pair = [gen[start - 1], *ids]
            pair_text = _spell(vocab, pair).decode("utf-8", "replace")
            if "\ufffd" not in pair_text:  # (a sampled partial character: no text to encode)
                assert tok.encode(pair_text) == pair, [vocab.token_bytes(i) for i in pair]


def test_forced_tool_call_prefix_on_llama3(llama3_tokenizer_json):
    tok = Tokenizer.from_file(llama3_tokenizer_json)
    vocab = TokenVocabulary.from_tokenizer_file(llama3_tokenizer_json, stop_token_ids=(tok.token_id("<|eot_id|>"),))
    forcer = ForcedTokenizer(vocab, tok)
    schema = {"type": "object", "properties": {"name": {"const": "get_weather"}, "parameters": WEATHER},
              "required": ["name", "parameters"], "additionalProperties": False}
    jg = JsonGrammar(compile_json_schema(schema, vocab), forcer)
    forced = jg.fast_forward.tokens(100)  # what is forced at the start (the model picks its first token)
    # the whole prefix up to the city's value is forced; the closing '":"' is left to the model ('":"' and
    # longer tokens like '":"' + text could start there)
    assert b"".join(vocab.token_bytes(i) for i in forced) == b'{"name":"get_weather","parameters":{"city'
    assert jg.fast_forward.tokens(3) == forced[:3]
    assert jg.fast_forward.tokens(0) == []
    # "orderId" / "orderName": after '{"', "order" alone is not forced (llguidance's example)
    two = {"type": "object", "properties": {"orderId": {"type": "string"}, "orderName": {"type": "string"}},
           "additionalProperties": False}
    jg = JsonGrammar(compile_json_schema(two, vocab), forcer)
    assert jg.forced_tokens(tok.encode('{"'), 10) == []


def test_a_sampled_token_a_longer_token_covers_is_replaced(real):
    """After a sampled `t` the grammar forces `ags` (then `":`, held back: a longer token may start there).
    The tokenizer writes `tags`: `t` is dropped and `tags` appended; the matcher goes back to before `t`, so
    catching up on the new ids feeds `tags`. After a sampled `tags` nothing is replaced."""
    tok, vocab, forcer, _ = real
    schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "integer"}},
                                               "zone": {"type": "integer"}}, "additionalProperties": False}
    jg = JsonGrammar(compile_json_schema(schema, vocab), forcer)
    gen = tok.encode('{"') + tok.encode("t")
    assert _spell(vocab, jg.forced_tokens(gen, 10)) == b"ags"  # alone: the split the tokenizer never writes
    assert jg.healed_forced_tokens(gen, 10) == (1, tok.encode("tags"))
    assert jg.matcher.num_accepted == len(gen) - 1
    jg._catch_up(gen[:-1] + tok.encode("tags"))
    assert not jg.matcher.is_error and jg.matcher.num_accepted == len(gen)
    again = JsonGrammar(compile_json_schema(schema, vocab), forcer)
    assert again.healed_forced_tokens(gen, 10) == (1, tok.encode("tags"))  # the kept answer: the same
    assert again.healed_forced_tokens(gen, 0) == (0, [])
    kept = JsonGrammar(compile_json_schema(schema, vocab), forcer)
    whole = tok.encode('{"') + tok.encode("tags")
    assert kept.healed_forced_tokens(whole, 10) == (0, [])  # `":` is held back; nothing to heal
    assert kept.matcher.num_accepted == len(whole)


def test_the_model_picks_a_forced_runs_first_token_after_a_sampled_one(real):
    """Model-led starts (the default): after a sampled `t` the grammar forces `ags`, but nothing is forced yet
    (the matcher stays after `t`): the model picks the next token under the mask. After that pick the rest is
    forced (`s`; `":` is held back). A run that is only the stop token is taken at once."""
    tok, vocab, _, stop = real
    forcer = ForcedTokenizer(vocab, tok)
    assert not forcer.healing
    schema = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "integer"}},
                                               "zone": {"type": "integer"}}, "additionalProperties": False}
    jg = JsonGrammar(compile_json_schema(schema, vocab), forcer)
    gen = tok.encode('{"') + tok.encode("t")
    assert _spell(vocab, jg.forced_tokens(gen, 10)) == b"ags"
    assert jg.healed_forced_tokens(gen, 10) == (0, [])  # left to the model
    assert jg.matcher.num_accepted == len(gen)
    picked = gen + tok.encode("ag")
    assert len(tok.encode("ag")) == 1
    assert jg.healed_forced_tokens(picked, 10) == (0, tok.encode("s"))  # the rest of the run
    other = JsonGrammar(compile_json_schema(schema, vocab), forcer)  # a pick that took the whole run
    assert other.healed_forced_tokens(gen, 10) == (0, [])
    assert other.healed_forced_tokens(tok.encode('{"') + tok.encode("tags"), 10) == (0, [])  # `":` held back
    done = JsonGrammar(compile_json_schema({"enum": ["ab", "ac"]}, vocab), forcer)
    whole = tok.encode('"ab"')
    assert done.healed_forced_tokens(whole, 10) == (0, [stop])  # only the stop token: nothing to pick
    named = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
             "additionalProperties": False}
    start = JsonGrammar(compile_json_schema(named, vocab), forcer)  # at the answer's start: the model picks too
    run = start.fast_forward.tokens(10)
    assert _spell(vocab, run).startswith(b'{"name') and len(run) >= 2
    assert start.forced_tokens([], 10) == []
    drop, rest = start.healed_forced_tokens(tok.encode("{"), 10)  # the model picked `{`: the rest is forced
    assert drop == 0 and _spell(vocab, tok.encode("{") + rest) == _spell(vocab, run)
    healing = JsonGrammar(compile_json_schema(named, vocab), ForcedTokenizer(vocab, tok, healing=True))
    assert healing.forced_tokens([], 10) == run  # with token healing: forced at once
