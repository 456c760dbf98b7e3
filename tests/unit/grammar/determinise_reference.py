"""The pure-Python subset construction that :func:`realizar_ort.grammar.automaton.determinise` ran before its
inner loop moved to numba (``kernels/subset_construction.py``), kept as the reference the tests compare the
kernel with: same table, same state numbering, same refusals."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
from realizar_ort.kernels.automaton_summary import plain_loop_states, self_loop_bits

from realizar_ort.grammar.automaton import _PLAIN_PATHS, INC, ROOM, UNBOUNDED, Automaton, Nfa
from realizar_ort.grammar.errors import GrammarTooLargeError, UnsupportedSchemaError


def _closure(nfa: _Lists, states: frozenset[int] | set[int]) -> frozenset[int]:
    out = set(states)
    todo = list(states)
    while todo:
        s = todo.pop()
        for t in nfa.eps[s]:
            if t not in out:
                out.add(t)
                todo.append(t)
    return frozenset(out)


class _Lists:
    """The NFA with per-state lists, as the Python construction read it (the Nfa now keeps flat lists)."""

    def __init__(self, nfa: Nfa) -> None:
        n = nfa.num_states
        self.eps: list[list[int]] = [[] for _ in range(n)]
        self.edges: list[list[tuple[int, int, int, int]]] = [[] for _ in range(n)]
        self.calls: list[list[tuple[str, int]]] = [[] for _ in range(n)]
        for i in range(0, len(nfa.eps), 2):
            self.eps[nfa.eps[i]].append(nfa.eps[i + 1])
        e = nfa.edges
        for i in range(0, len(e), 5):
            self.edges[e[i]].append((e[i + 1], e[i + 2], e[i + 3], e[i + 4]))
        for a, key, ret in nfa.calls:
            self.calls[a].append((key, ret))
        self.seg = nfa.seg
        self.free_bodies = nfa.free_bodies


def determinise_reference(nfa: Nfa, rule_keys: list[str], rule_frags: list[tuple[int, int]], max_states: int,
                          tick: Callable[[], None]) -> Automaton:
    """Subset construction per rule; all rules' DFA states share one table. ~5-15 us per DFA state.

    ``rule_keys[i]`` names rule ``i`` and ``rule_frags[i]`` is its (start, final) NFA pair; rule 0 is the
    root. ``tick`` is called once per DFA state (the compiler's deadline check).
    """
    nfa = _Lists(nfa)
    ids: dict[frozenset[int], int] = {}
    order: list[frozenset[int]] = []
    rule_final: list[int] = []
    closures: dict[int, frozenset[int]] = {}

    def closure1(state: int) -> frozenset[int]:
        c = closures.get(state)
        if c is None:
            c = closures[state] = _closure(nfa, (state,)) if nfa.eps[state] else frozenset((state,))
        return c

    def dfa_id(members: frozenset[int], final_nfa: int) -> int:
        q = ids.get(members)
        if q is None:
            if len(order) >= max_states:
                raise GrammarTooLargeError(f"schema needs more than {max_states} automaton states")
            q = ids[members] = len(order)
            order.append(members)
            rule_final.append(final_nfa)
            pending.append(q)
        return q

    cap = 256
    trans_buf = np.full((cap, 256), -1, dtype=np.int32)
    flags_buf = np.zeros((cap, 256), dtype=np.uint8)
    calls: dict[int, tuple[str, int]] = {}
    segs: list[tuple[int, int] | None] = []
    finals: list[bool] = []
    rule_start: dict[str, int] = {}
    pending: list[int] = []
    done = 0
    for built, key in enumerate(rule_keys):
        s, e = rule_frags[built]
        rule_start[key] = dfa_id(closure1(s), e)
        while pending:
            tick()
            q = pending.pop()
            if q >= cap:
                cap = max(cap * 2, q + 1)
                trans_buf = np.concatenate([trans_buf, np.full((cap - trans_buf.shape[0], 256), -1, np.int32)])
                flags_buf = np.concatenate([flags_buf, np.zeros((cap - flags_buf.shape[0], 256), np.uint8)])
            done += 1
            members = order[q]
            final_nfa = rule_final[q]
            row = trans_buf[q]
            frow = flags_buf[q]
            while len(finals) <= q:
                finals.append(False)
                segs.append(None)
            if len(members) == 1:  # fast path: a lone NFA state with one byte edge (literal text)
                (m,) = members
                one = nfa.edges[m]
                if len(one) == 1 and one[0][0] == one[0][1] and not nfa.calls[m]:
                    byte, _, t, f = one[0]
                    row[byte] = dfa_id(closure1(t), final_nfa)
                    frow[byte] = f
                    finals[q] = m == final_nfa
                    segs[q] = nfa.seg[m]
                    continue
            edges = [edge for m in members for edge in nfa.edges[m]] if len(members) > 1 else nfa.edges[next(iter(members))]
            edges = sorted(edges)
            disjoint = all(edges[i][1] < edges[i + 1][0] for i in range(len(edges) - 1))
            if disjoint:  # the common case: one target per byte range
                for lo, hi, t, f in edges:
                    row[lo:hi + 1] = dfa_id(closure1(t), final_nfa)
                    if f:
                        frow[lo:hi + 1] = f
            else:
                # sweep the byte axis: at each breakpoint only the edges covering it (sorted by start)
                points = sorted({lo for lo, _, _, _ in edges} | {hi + 1 for _, hi, _, _ in edges})
                active: list[tuple[int, int, int, int]] = []
                nxt_edge = 0
                seen: dict[frozenset[tuple[int, int]], int] = {}
                for a, b in itertools.pairwise(points):
                    while nxt_edge < len(edges) and edges[nxt_edge][0] <= a:
                        active.append(edges[nxt_edge])
                        nxt_edge += 1
                    active = [edge for edge in active if edge[1] >= a]
                    if not active:
                        continue
                    key = frozenset((t, f) for _, _, t, f in active)
                    target = seen.get(key)
                    if target is None:
                        flag_set = {f for _, f in key}
                        if len(flag_set) > 1:
                            raise UnsupportedSchemaError(
                                "maxLength", "#", "alternatives overlap with different string length bounds")
                        targets = frozenset().union(*(closure1(t) for t, _ in key))
                        target = seen[key] = dfa_id(targets, final_nfa)
                    row[a:b] = target
                    frow[a:b] = next(iter(key))[1]
            finals[q] = final_nfa in members
            seg_set = {nfa.seg[m] for m in members if nfa.edges[m]}
            if len(seg_set) > 1:
                raise UnsupportedSchemaError(
                    "maxLength" if any(sg and sg[1] < UNBOUNDED for sg in seg_set if sg) else "minLength", "#",
                    "overlapping alternatives with different string length bounds")
            segs[q] = next(iter(seg_set)) if seg_set else None
            call_set = {c for m in members for c in nfa.calls[m]} if any(nfa.calls[m] for m in members) else ()
            if call_set:
                # a call is an edge labelled by its callee: calls of one callee from several members share it,
                # and after it returns we are in any of their return states (subset construction again)
                callees = {callee for callee, _ in call_set}
                if len(callees) > 1:
                    raise UnsupportedSchemaError("$ref", "#", "alternatives call different recursive rules here")
                rets = frozenset().union(*(closure1(ret) for _, ret in call_set))
                calls[q] = (callees.pop(), dfa_id(rets, final_nfa))
    n = len(order)
    trans = np.ascontiguousarray(trans_buf[:n])
    flags = np.ascontiguousarray(flags_buf[:n])
    call_start = np.full(n, -1, dtype=np.int32)
    call_ret = np.full(n, -1, dtype=np.int32)
    for q, (callee, ret_q) in calls.items():
        cs = rule_start[callee]
        if trans[cs].max() < 0:
            raise UnsupportedSchemaError("$ref", callee, "left-recursive reference")
        if np.any((trans[cs] >= 0) & (trans[q] >= 0)):
            raise UnsupportedSchemaError("$ref", callee, "recursive reference overlaps an alternative")
        call_start[q] = cs
        call_ret[q] = ret_q
    cmin = np.asarray([sg[0] if sg else 0 for sg in segs], dtype=np.int32)
    cmax = np.asarray([sg[1] if sg else UNBOUNDED for sg in segs], dtype=np.int32)
    counted = np.asarray([sg is not None for sg in segs], dtype=bool)
    plain = plain_loop_states(trans, flags, counted, _PLAIN_PATHS, INC, ROOM)
    loop_bits = self_loop_bits(trans, flags)
    free = np.zeros(n, dtype=bool)
    for q, members in enumerate(order):
        if len(members) == 1 and next(iter(members)) in nfa.free_bodies:
            free[q] = True
    free &= plain
    return Automaton(trans, flags, np.asarray(finals, dtype=bool), call_start, call_ret, cmin, cmax, plain,
                     loop_bits, free, counted, rule_start[rule_keys[0]])
