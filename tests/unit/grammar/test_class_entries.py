"""``class_loop_entries`` (per state, the character class the mask kernel may shortcut) equals the
computation it replaced, which walked every byte of a class at each step of each chain: now each state's
byte groups are summarised once and a step reads a few summaries. The reference below is that old code in
plain Python."""

from __future__ import annotations

import numpy as np
import pytest
from realizar_ort.kernels.token_classes import class_loop_entries, loop_byte_groups
from realizar_ort.kernels.token_mask import S_CALL, S_FINAL, S_PLAIN

from realizar_ort.grammar import compiler, matcher


def _class_step_reference(trans, flags, s, groups, group_bit):
    t = -1
    seen = False
    for b in range(256):
        if (groups & int(group_bit[b])) == 0:
            continue
        nb = int(trans[s, b])
        if not seen:
            seen = True
            t = nb
        if nb != t or (nb >= 0 and flags[s, b] != 0):
            return -2
    return t if t >= 0 else -1


def _class_entries_reference(trans, flags, info, loop_groups, class_states, group_bit, max_chain=16):
    n = trans.shape[0]
    loop_groups = [int(x) for x in loop_groups]
    out_groups, out_exit, out_len = np.zeros(n, np.uint64), np.zeros(n, np.uint64), np.zeros(n, np.int32)
    position = np.full(n, -1, dtype=np.int64)
    classes = []
    for i, c in enumerate(class_states):
        if position[c] < 0:
            position[c] = i
        if loop_groups[c] not in classes:
            classes.append(loop_groups[c])
    every = (1 << 64) - 1
    for q in range(n):
        if info[q, S_PLAIN] != 0:
            continue
        groups, bound, chain = 0, -1, []
        best = -1
        for cg in classes:
            steps, s = 0, q
            while steps < max_chain:
                steps += 1
                if position[s] >= 0 and loop_groups[s] == cg:
                    if best < 0 or position[s] < best:
                        best = position[s]
                    break
                t = _class_step_reference(trans, flags, s, cg, group_bit)
                if t < 0:
                    break
                s = t
        if best >= 0:
            cg = loop_groups[class_states[best]]
            s = q
            while True:
                chain.append(s)
                if position[s] >= 0 and loop_groups[s] == cg:
                    break
                s = _class_step_reference(trans, flags, s, cg, group_bit)
            groups = cg
        if groups == 0:
            viable = 0
            for b in range(256):
                if trans[q, b] >= 0:
                    viable |= int(group_bit[b])
            if viable == 0 or _class_step_reference(trans, flags, q, viable, group_bit) < 0:
                continue
            s = q
            while len(chain) <= max_chain:
                chain.append(s)
                t = _class_step_reference(trans, flags, s, viable, group_bit)
                if t < 0 or t == s:
                    break
                s = t
            t = _class_step_reference(trans, flags, s, viable, group_bit)
            if t != -1 or len(chain) < 3 or info[s, S_FINAL] != 0 or info[s, S_CALL] >= 0:
                continue
            groups, bound = viable, len(chain) - 1
        leave = 0
        for s in chain:
            if info[s, S_FINAL] != 0 or info[s, S_CALL] >= 0:
                leave = every
                break
            for b in range(256):
                if trans[s, b] >= 0:
                    leave |= int(group_bit[b])
        out_groups[q] = groups
        out_exit[q] = leave & ~groups & every
        out_len[q] = bound
    return out_groups, out_exit, out_len


SCHEMAS = [
    {"type": "string", "pattern": "^[A-Z]{3}-[0-9a-f]{8}$"},
    {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
    {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
    {"type": "string", "format": "date-time"},
    {"type": "string", "format": "uuid"},
    {"type": "object", "properties": {"id": {"type": "integer"}, "code": {"type": "string", "pattern": "^[A-Z]{2,5}$"},
                                      "price": {"type": "number"}, "tags": {"type": "array", "items": {"type": "string"}}}},
    {"type": "array", "items": {"type": "string", "pattern": "^[0-9]+[a-z]?$"}},
    {"type": "string", "pattern": "(foo|bar)[0-9]+x"},
    {},
]


@pytest.mark.parametrize("schema", SCHEMAS, ids=range(len(SCHEMAS)))
def test_class_entries_equal_the_byte_by_byte_walk(schema):
    automaton = compiler.compile_schema_automaton(schema)
    # without the string shortcut of closed pattern states (kernels/plain_closure.py), which would make most of
    # these class loops string states (no class entry) and leave nothing to compare
    grammar_info = matcher.CompiledGrammar(automaton, matcher.TokenVocabulary.from_token_bytes(
        [None] + [bytes([b]) for b in range(32, 127)], stop_token_ids=(0,)), string_shortcuts=False).automaton_arrays[2]
    loop_groups, exact = loop_byte_groups(automaton.loop_bits, matcher._GROUP_WORDS)
    classes = np.flatnonzero((loop_groups != 0) & ~automaton.plain_loop & exact)
    args = ((automaton.trans, automaton.flags, grammar_info), loop_groups, classes, matcher._GROUP_BIT)
    got = class_loop_entries(*args)
    want = _class_entries_reference(automaton.trans, automaton.flags, grammar_info, loop_groups, classes,
                                    matcher._GROUP_BIT)
    assert any(w.any() for w in want[:1]), "no class shortcut here: the comparison would prove little"
    for g, w in zip(got, want):
        assert np.array_equal(g, w)
