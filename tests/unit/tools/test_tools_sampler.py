"""HybridSampler on a small hand-built vocabulary with the real JSON grammar: phases, masks, probabilities."""

from __future__ import annotations

import json
import string

import jsonschema
import numpy as np
import pytest

from realizar_ort.grammar.matcher import TokenVocabulary, compile_json_schema
from realizar_ort.tools.definitions import parse_tools
from realizar_ort.tools.hybrid_sampler import HybridSampler, call_token_tables
from realizar_ort.tools.prompts import CallFormat

SPECIALS = ["<stop>", "<tag>"]
PIECES = SPECIALS + list(string.printable[:95]) + ["\n", '{"', "{\n", "{}", '":"', '","', "name", "arguments", "Hi", " there"]
VOCAB = len(PIECES)
STOP, TAG = 0, 1


class ToyTokenizer:
    """The slice of realizar_ort.tokenizer.Tokenizer the sampler reads."""

    vocab_size = VOCAB
    special_ids = frozenset({STOP, TAG})

    def token_bytes(self, token_id: int) -> bytes:
        return PIECES[token_id].encode()

    def token_id(self, text: str) -> int | None:
        return PIECES.index(text) if text in PIECES else None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [PIECES.index(text)]


def ids(*pieces: str) -> list[int]:
    return [PIECES.index(p) for p in pieces]


FORMAT = CallFormat(opening_token="<tag>", json_at_start=True, name_key="name", arguments_key="arguments",
                    type_field=False, parallel_array=True, stop_tokens=("<stop>",))
TOOLS = parse_tools([
    {"type": "function", "function": {"name": "f", "parameters": {
        # closed: a random walk over an open object (extra keys allowed, as JSON Schema says) need not end
        "type": "object", "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["x"],
        "additionalProperties": False}}},
    {"type": "function", "function": {"name": "g"}},
])
SCHEMA = FORMAT.call_schema(TOOLS)
PARALLEL_SCHEMA = FORMAT.call_schema(TOOLS, max_parallel=3)
TOY = ToyTokenizer()


def _compile(schema: dict):
    token_bytes = [None if i in TOY.special_ids else TOY.token_bytes(i) for i in range(VOCAB)]
    vocab = TokenVocabulary.from_token_bytes(token_bytes, stop_token_ids=(STOP,))
    return compile_json_schema(schema, vocab)


@pytest.fixture(scope="module")
def grammar():
    return _compile(SCHEMA)


@pytest.fixture(scope="module")
def parallel_grammar():
    return _compile(PARALLEL_SCHEMA)


def sampler(grammar, mode: str, parallel: bool = False, fmt: CallFormat = FORMAT) -> HybridSampler:
    tables = call_token_tables(TOY, VOCAB, fmt)
    return HybridSampler(tables, grammar if mode != "none" else None, mode, json_at_start=fmt.json_at_start,
                         parallel=parallel)


def logits_for(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=VOCAB).astype(np.float32)


def test_tables() -> None:
    tables = call_token_tables(TOY, VOCAB, FORMAT)
    assert sorted(tables.brace_ids.tolist()) == ids("{", '{"', "{\n", "{}")
    assert tables.bracket_ids.tolist() == ids("[")
    assert tables.opening_id == TAG and tables.stop_ids.tolist() == [STOP]
    assert tables.start_ids(True).tolist() == sorted(ids("{", '{"', "{\n", "{}", "["))
    assert call_token_tables(TOY, VOCAB, FORMAT) is tables  # cached per tokenizer


def test_auto_start_keeps_the_probability_of_a_call(grammar) -> None:
    s = sampler(grammar, "auto")
    logits = logits_for(0)
    before = logits.copy()
    s.process([], logits)
    brace = ids("{", '{"', "{\n", "{}")
    finite = [t for t in brace if np.isfinite(logits[t])]
    assert len(finite) == 1 and finite[0] in ids("{", '{"')  # one token the grammar can start with
    total = np.log(np.exp(before[brace].astype(np.float64)).sum())
    assert logits[finite[0]] == pytest.approx(total, rel=1e-6)
    others = [t for t in range(VOCAB) if t not in brace]
    assert np.array_equal(logits[others], before[others])  # text and the opening token untouched


def test_a_call_opened_by_brace_is_enforced_then_only_stop(grammar) -> None:
    s = sampler(grammar, "auto")
    logits = logits_for(0)
    s.process([], logits)
    first = int(next(t for t in ids("{", '{"') if np.isfinite(logits[t])))
    generated = [first]
    reference = grammar.matcher()
    assert reference.advance(first)
    rest = '{"name":"f","arguments":{"x":7}}'[len(PIECES[first]) :]
    for token in ids(*rest):  # one character per token
        logits = logits_for(len(generated))
        s.process(generated, logits)
        assert s.phase == "call"
        allowed = np.flatnonzero(np.isfinite(logits))
        assert allowed.tolist() == reference.allowed_token_ids().tolist()
        assert token in allowed
        assert reference.advance(token)
        generated.append(token)
    logits = logits_for(99)
    s.process(generated, logits)
    assert s.phase == "between"
    assert np.flatnonzero(np.isfinite(logits)).tolist() == [STOP]  # one call per turn here


def test_text_first_then_opening_token_starts_a_call(grammar) -> None:
    s = sampler(grammar, "auto")
    s.process([], logits_for(1))
    generated = ids("Hi", " there", "{")  # a "{" later in the text is just text
    logits = logits_for(2)
    before = logits.copy()
    s.process(generated, logits)
    assert s.phase == "free" and np.array_equal(logits, before)
    generated.append(TAG)
    logits = logits_for(3)
    s.process(generated, logits)
    assert s.phase == "call"
    assert np.flatnonzero(np.isfinite(logits)).tolist() == grammar.matcher().allowed_token_ids().tolist()


def test_none_never_opens_a_call() -> None:
    s = sampler(None, "none")
    logits = logits_for(4)
    s.process([], logits)
    blocked = [*ids("{", '{"', "{\n", "{}"), TAG]
    assert not np.isfinite(logits[blocked]).any()
    assert np.isfinite(np.delete(logits, blocked)).all()
    logits = logits_for(5)
    s.process(ids("Hi"), logits)
    assert not np.isfinite(logits[TAG]) and np.isfinite(np.delete(logits, TAG)).all()


def test_required_with_an_opening_token_starts_with_it_or_with_bare_json(grammar) -> None:
    """Llama 3.1/3.2 write a call as <|python_tag|>{...} or as a bare {"name": ...}: under "required" both
    may start the reply; the "{" tokens' mass is pooled on the grammar's first token, as under "auto"."""
    braces = [i for i, p in enumerate(PIECES) if p.startswith("{")]
    logits = logits_for(6)
    pooled = float(np.logaddexp.reduce(logits[braces].astype(np.float64)))
    s = sampler(grammar, "required")
    s.process([], logits)
    assert np.flatnonzero(np.isfinite(logits)).tolist() == sorted([TAG, *ids('{"')])
    assert logits[ids('{"')[0]] == pytest.approx(pooled, rel=1e-6)
    s.process([TAG], logits_for(7))
    assert s.phase == "call"
    bare = sampler(grammar, "required")
    bare.process([], logits_for(6))
    logits = logits_for(7)
    bare.process(ids('{"'), logits)
    assert bare.phase == "call"
    assert {PIECES[i] for i in np.flatnonzero(np.isfinite(logits))} == {"n", "name"}  # the grammar read '{"'


def test_required_with_an_opening_token_only_forces_it_when_json_cannot_start(grammar) -> None:
    fmt = CallFormat("<tag>", False, "name", "arguments", False, True, ("<stop>",))
    s = sampler(grammar, "required", fmt=fmt)
    logits = logits_for(6)
    s.process([], logits)
    assert np.flatnonzero(np.isfinite(logits)).tolist() == [TAG]


def test_required_without_an_opening_token_starts_inside_the_grammar(grammar) -> None:
    fmt = CallFormat(None, True, "name", "arguments", False, True, ("<stop>",))
    s = sampler(grammar, "required", fmt=fmt)
    logits = logits_for(8)
    s.process([], logits)
    assert np.flatnonzero(np.isfinite(logits)).tolist() == grammar.matcher().allowed_token_ids().tolist()


def _walk(s: HybridSampler, rng: np.random.Generator, limit: int = 200) -> tuple[list[int], bool]:
    """Sample from the sampler's masked random logits until the stop token (True) or `limit` (False)."""
    generated: list[int] = []
    for _ in range(limit):
        logits = rng.normal(size=VOCAB).astype(np.float32) * 3
        s.process(generated, logits)
        allowed = np.flatnonzero(np.isfinite(logits))
        assert allowed.size, "the sampler must always leave a token"
        probs = np.exp(logits[allowed] - logits[allowed].max())
        token = int(rng.choice(allowed, p=probs / probs.sum()))
        if token == STOP:
            return generated, True
        generated.append(token)
    return generated, False


@pytest.mark.parametrize("parallel", [False, True])
def test_random_sampling_under_required_always_yields_valid_calls(grammar, parallel_grammar, parallel: bool) -> None:
    shapes = set()
    openings = set()
    for seed in range(200):
        s = sampler(parallel_grammar if parallel else grammar, "required", parallel=parallel)
        generated, stopped = _walk(s, np.random.default_rng(seed))
        assert stopped and (generated[0] == TAG or PIECES[generated[0]][0] in "{[")
        openings.add("<tag>" if generated[0] == TAG else "json")
        value = json.loads("".join(PIECES[t] for t in generated[generated[0] == TAG:]))
        jsonschema.validate(value, PARALLEL_SCHEMA if parallel else SCHEMA)
        shapes.add(type(value).__name__)
    assert shapes == ({"dict", "list"} if parallel else {"dict"})
    assert openings == {"<tag>", "json"}  # both ways of opening a call were taken


def test_parallel_auto_start_pools_brace_and_bracket_mass(parallel_grammar) -> None:
    s = sampler(parallel_grammar, "auto", parallel=True)
    logits = logits_for(11)
    before = logits.copy()
    s.process([], logits)
    starts = ids("{", '{"', "{\n", "{}", "[")
    finite = [t for t in starts if np.isfinite(logits[t])]
    assert len(finite) == 1
    assert logits[finite[0]] == pytest.approx(np.log(np.exp(before[starts].astype(np.float64)).sum()), rel=1e-6)
    generated = [finite[0]]
    logits = logits_for(12)
    s.process(generated, logits)
    assert s.phase == "call"


def test_random_sampling_under_auto_gives_text_or_valid_calls(grammar) -> None:
    calls = texts = 0
    for seed in range(300):
        s = sampler(grammar, "auto")
        generated, stopped = _walk(s, np.random.default_rng(1000 + seed), limit=300)
        if TAG in generated:
            body = generated[generated.index(TAG) + 1 :]
        elif generated and PIECES[generated[0]].startswith("{"):
            body = generated
        else:
            texts += 1
            assert s.phase in ("start", "free")
            continue
        calls += 1
        assert stopped and s.phase == "between"  # complete; the stop token ended the walk
        jsonschema.validate(json.loads("".join(PIECES[t] for t in body)), SCHEMA)
    assert calls > 20 and texts > 20


# ---- a response format next to the tools ---------------------------------------------------------------
ANSWER = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 4}},
          "required": ["name"], "additionalProperties": False}  # overlaps a call body up to `{"name":"`


def _feed_text(s: HybridSampler, text: str, seed: int = 0) -> list[int]:
    """Feed `text` one character per token, checking each is allowed; returns the tokens."""
    generated: list[int] = []
    for token in ids(*text):
        logits = logits_for(seed + len(generated))
        s.process(generated, logits)
        assert np.isfinite(logits[token]), (text, len(generated), s.phase)
        generated.append(token)
    return generated


@pytest.mark.parametrize("reply", ['{"name":"f","arguments":{"x":7}}', '{"name":"g","arguments":{}}',
                                   '{"name":"Ada"}', '{"name":"g"}'])
def test_auto_with_a_response_format_allows_a_call_or_the_answer_and_nothing_else(grammar, reply) -> None:
    s = HybridSampler(call_token_tables(TOY, VOCAB, FORMAT), grammar, "auto", answer=_compile(ANSWER))
    logits = logits_for(0)
    s.process([], logits)
    allowed = set(np.flatnonzero(np.isfinite(logits)).tolist())
    assert TAG in allowed and not allowed & set(ids("H", "Hi", " there", "a"))  # no free text
    generated = _feed_text(s, reply)
    logits = logits_for(99)
    s.process(generated, logits)
    assert s.phase == "between" and np.flatnonzero(np.isfinite(logits)).tolist() == [STOP]


@pytest.mark.parametrize("reply", ['{"name":"f","arguments":{"x":"7"}}', '{"name":"Adaaa"}', '{"name":"f"',
                                   '{"nam"'])
def test_auto_with_a_response_format_refuses_what_neither_accepts(grammar, reply) -> None:
    s = HybridSampler(call_token_tables(TOY, VOCAB, FORMAT), grammar, "auto", answer=_compile(ANSWER))
    generated: list[int] = []
    refused = False
    for token in ids(*reply):
        logits = logits_for(len(generated))
        s.process(generated, logits)
        if not np.isfinite(logits[token]):
            refused = True
            break
        generated.append(token)
    if not refused:  # a prefix both accept: it may not end here
        logits = logits_for(7)
        s.process(generated, logits)
        assert not np.isfinite(logits[STOP])


def test_none_with_a_response_format_is_the_answer_alone_and_required_ignores_it(grammar) -> None:
    tables = call_token_tables(TOY, VOCAB, FORMAT)
    s = HybridSampler(tables, None, "none", answer=_compile(ANSWER))
    generated = _feed_text(s, '{"name":"Ada"}')
    logits = logits_for(5)
    s.process(generated, logits)
    assert np.flatnonzero(np.isfinite(logits)).tolist() == [STOP]
    s = HybridSampler(tables, None, "none", answer=_compile(ANSWER))
    logits = logits_for(1)
    s.process([], logits)
    assert not np.isfinite(logits[TAG])
    s = HybridSampler(tables, grammar, "required", answer=_compile(ANSWER))
    logits = logits_for(2)
    s.process([], logits)
    # only a call, the format does not apply: the opening tag, or (json_at_start) the call body's first token
    call_only = HybridSampler(tables, grammar, "required")
    expected = logits_for(2)
    call_only.process([], expected)
    assert np.flatnonzero(np.isfinite(logits)).tolist() == np.flatnonzero(np.isfinite(expected)).tolist()
    assert TAG in np.flatnonzero(np.isfinite(logits)).tolist()
