"""The numba subset construction (``kernels/subset_construction.py``, behind ``automaton.determinise``) builds
the same DFA as the pure-Python construction it replaced (``determinise_reference``): every array equal,
state numbering included, and the same refusal where the NFA breaks an invariant."""

from __future__ import annotations

import numpy as np
import pytest
from determinise_reference import determinise_reference

from realizar_ort.grammar import automaton, compiler
from realizar_ort.grammar.errors import GrammarError

FIELDS = ("trans", "flags", "final", "call_start", "call_ret", "cmin", "cmax", "plain_loop", "loop_bits",
          "free_string", "counted", "start")

SCHEMAS = [
    {},
    {"type": "object"},
    {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
     "required": ["name"]},
    {"type": "object", "properties": {"a": {"type": "string"}, "ab": {"type": "number"}, "é": {"type": "boolean"}},
     "additionalProperties": False},
    {"type": "array", "items": {"enum": ["red", "green", "blue", 3, None]}, "minItems": 1, "maxItems": 4},
    {"type": "string", "minLength": 2, "maxLength": 5},
    {"type": "string", "pattern": "^[A-Z]{3}-[0-9a-f]{8}$"},
    {"type": "string", "pattern": "rocket_font"},
    {"type": "string", "format": "date-time"},
    {"type": "integer", "minimum": -40, "maximum": 12345},
    {"type": "number", "exclusiveMinimum": 0},
    {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "integer"}, {"type": "array", "items": {"type": "string"}}]},
    {"oneOf": [{"const": "a"}, {"const": "b"}, {"type": "object", "properties": {"k": {"const": 1}}}]},
    {"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"},
                                                         "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                        "required": ["v"]}},
     "$ref": "#/$defs/node"},
    {"type": "object", "properties": {"meta": {}, "tags": {"type": "array"}}, "required": ["meta"]},
    {"type": "object", "patternProperties": {"^x-": {"type": "string"}}, "additionalProperties": {"type": "integer"}},
    {"not": {"enum": ["a", "b"]}, "type": "string"},
    # refusals, each raised at a different point of the construction
    {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "string", "minLength": 5}]},
    {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "string", "pattern": "^a+$"}]},
    {"anyOf": [{"type": "string", "minLength": 2}, {"const": "abc"}]},
    {"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}, {"type": "integer"}]}}, "$ref": "#/$defs/a"},
    {"type": "array", "items": {"anyOf": [{"$ref": "#"}, {"type": "array", "items": {"type": "integer"}}]}},
]


def _both(schema, monkeypatch, max_states: int | None = None):
    """Compile ``schema`` with the kernel, then determinise the very same NFA with the reference."""
    seen = []

    def capture(nfa, keys, frags, budget, tick, _deadline=None):
        # no deadline: a cold numba cache (JIT at the first call) must not time the reference out
        seen.append((nfa, list(keys), list(frags), budget if max_states is None else max_states, lambda: None))
        return automaton.determinise(*seen[-1])

    monkeypatch.setattr(compiler, "determinise", capture)
    try:
        compiler.compile_schema_automaton(schema)
    except GrammarError:
        pass
    assert seen, "the schema never reached determinisation"
    results = []
    for args in seen:  # every tier the compiler tried (shared rules, then fewer)
        pair = []
        for fn in (automaton.determinise, determinise_reference):
            try:
                pair.append(fn(*args))
            except GrammarError as exc:
                pair.append(exc)
        results.append(pair)
    return results


@pytest.mark.parametrize("schema", SCHEMAS, ids=range(len(SCHEMAS)))
def test_kernel_builds_the_reference_dfa(schema, monkeypatch):
    for ours, ref in _both(schema, monkeypatch):
        if isinstance(ref, Exception):
            assert type(ours) is type(ref) and str(ours) == str(ref)
            continue
        assert not isinstance(ours, Exception), ours
        for field in FIELDS:
            assert np.array_equal(getattr(ours, field), getattr(ref, field)), field


def test_refusals_are_exercised(monkeypatch):
    """The cases above do hit the kernel's error paths (else the comparison would prove nothing there)."""
    messages = set()
    for schema in SCHEMAS[-5:]:
        for ours, _ in _both(schema, monkeypatch):
            if isinstance(ours, Exception):
                messages.add(str(ours).split(": ", 1)[-1])
    assert {"alternatives overlap with different string length bounds",
            "overlapping alternatives with different string length bounds",
            "recursive reference overlaps an alternative"} <= messages


@pytest.mark.parametrize("budget", [1, 7, 40])
def test_state_budget_matches(budget, monkeypatch):
    for ours, ref in _both(SCHEMAS[2], monkeypatch, max_states=budget):
        assert type(ours) is type(ref) and str(ours) == str(ref)
