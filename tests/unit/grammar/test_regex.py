"""``pattern``: our ECMA-262 regex compiler agrees with a reference on random patterns and strings, refuses
what it cannot enforce, and no pattern can hold a core past the compile budget (issue 19 item 1, issue 20 bug 1)."""

from __future__ import annotations

import json
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realizar_ort.kernels.token_mask import advance_token_bytes_reference

from realizar_ort.grammar.json_schema import (
    GrammarError,
    GrammarTooLargeError,
    UnsupportedSchemaError,
    compile_schema_automaton,
)
from realizar_ort.grammar.matcher import TokenVocabulary, compile_json_schema


def run(a, value: str) -> bool:
    text = json.dumps(value, ensure_ascii=False).encode("utf-8")
    r = advance_token_bytes_reference((*a.arrays, a.plain_loop, a.loop_bits, a.free_string), text, a.start, 0, [], 64)
    return r is not None and not r[2] and bool(a.final[r[0]])


def test_bug1_unicode_white_space_is_ecma_s():
    no_space = compile_schema_automaton({"type": "string", "pattern": r"^\S+$"})
    assert run(no_space, "ab\u00e9") and run(no_space, "\U0001F600")
    for s in ["a\u00a0b", "a\u2028b", "a\ufeffb", "a b", "a\tb", "a\u3000b"]:
        assert not run(no_space, s), repr(s)
    space = compile_schema_automaton({"type": "string", "pattern": r"^\s$"})
    for s in ["\u00a0", "\u2028", " ", "\n", "\ufeff"]:
        assert run(space, s), repr(s)
    assert not run(space, "a") and not run(space, "\u0085")
    dot = compile_schema_automaton({"type": "string", "pattern": "^.$"})
    assert run(dot, "\u00e9") and not run(dot, "\n") and not run(dot, "\u2028")
    neg = compile_schema_automaton({"type": "string", "pattern": "^[^\u00e9a]+$"})
    assert run(neg, "b\u00e8") and not run(neg, "b\u00e9") and not run(neg, "ba")


@pytest.mark.parametrize("pattern", [r"\bfoo", r"(a)\1", "(?=a)b", "(?<!a)b", r"\p{L}", "(?i)a", "a{3,1}",
                                     "[a", "(a", "a)", "*a", "a{20000}", "a^b", r"[a-z]{100000}"])
def test_unenforceable_or_oversized_patterns_are_refused_by_name(pattern):
    with pytest.raises(UnsupportedSchemaError) as err:
        compile_schema_automaton({"type": "string", "pattern": pattern})
    assert err.value.keyword == "pattern"


@pytest.mark.parametrize("pattern", [r"[a-z]{100000}", r"[a-z]{30000}", r"(a|b){5000}", r"((a{100}){100}){100}",
                                     r"[\s\S]*a[ab]{30}", r"(x+x+)+y", r"^(\w{10}){1000}$"])
def test_pathological_patterns_end_within_budget(pattern):
    """Refused (naming the keyword or the budget) or compiled, within the 1 s budget + 1 s."""
    start = time.perf_counter()
    try:
        compile_schema_automaton({"type": "string", "pattern": pattern}, deadline_s=1.0)
        assert pattern == r"(x+x+)+y"  # catastrophic for a backtracking matcher, small as a DFA
    except UnsupportedSchemaError as exc:
        assert exc.keyword == "pattern" and ("states" in str(exc) or "above 10000" in str(exc))
    except GrammarTooLargeError as exc:
        assert "exceeded" in str(exc) or "states" in str(exc)
    assert time.perf_counter() - start < 2.0


def test_compile_budget_is_a_parameter_of_compile_json_schema():
    vocab = TokenVocabulary.from_token_bytes([None] + [bytes([b]) for b in range(32, 127)], stop_token_ids=(0,))
    start = time.perf_counter()
    with pytest.raises(GrammarError):
        compile_json_schema({"type": "string", "pattern": r"[\s\S]*a[ab]{40}"}, vocab, deadline_s=0.5)
    assert time.perf_counter() - start < 1.5


# random patterns over a small alphabet, compared with Python's re (same semantics on this subset)
_ATOMS = st.sampled_from(["a", "b", "c", ".", "[ab]", "[^a]", "[a-c]", r"\d", "1", r"\.", "\u00e9", "[^\u00e9]",
                          "\"", "\\\\", "\n"])


def _regex(depth: int = 0):
    if depth > 2:
        return _ATOMS
    sub = st.deferred(lambda: _regex(depth + 1))
    return st.one_of(
        _ATOMS,
        st.lists(sub, min_size=1, max_size=3).map("".join),
        st.tuples(sub, sub).map(lambda t: f"(?:{t[0]}|{t[1]})"),
        st.tuples(sub, st.sampled_from(["*", "+", "?", "{2}", "{0,2}", "{1,}"])).map(lambda t: f"(?:{t[0]}){t[1]}"),
    )


_PATTERNS = st.tuples(st.booleans(), _regex(), st.booleans()).map(lambda t: ("^" if t[0] else "") + t[1] +
                                                                   ("$" if t[2] else ""))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=_PATTERNS, strings=st.lists(st.text(alphabet="abc1.\u00e9\"\\\n", max_size=6), min_size=1, max_size=8))
def test_random_patterns_agree_with_python_re_and_end_in_budget(pattern, strings):
    start = time.perf_counter()
    try:
        a = compile_schema_automaton({"type": "string", "pattern": pattern}, deadline_s=1.0)
    except GrammarTooLargeError:
        assert time.perf_counter() - start < 2.0
        return
    assert time.perf_counter() - start < 2.0
    ref = re.compile(pattern.replace("$", r"\Z") if pattern.endswith("$") else pattern, re.ASCII)
    for s in strings:
        assert run(a, s) == (ref.search(s) is not None), (pattern, s)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=st.text(alphabet="ab()[]{}|*+?^$\\.,0123456789-sSdDwW", max_size=24))
def test_arbitrary_pattern_text_ends_in_budget_with_a_typed_error(pattern):
    start = time.perf_counter()
    try:
        compile_schema_automaton({"type": "string", "pattern": pattern}, deadline_s=1.0)
    except GrammarError:
        pass
    assert time.perf_counter() - start < 2.0
