"""The byte automaton: its flags, the NFA we build, and subset construction into the dense DFA.

- :class:`Nfa` is the Thompson-construction scratchpad the schema walk (:mod:`.schema_compiler`) writes
  into: epsilon edges, byte-range edges with counter flags, ``calls`` for recursive rules, and the
  string-length segment (``seg``) each state belongs to.
- :func:`determinise` runs the subset construction once per rule; all rules' DFA states share one
  ``[states, 256]`` table. It checks the invariants the kernel relies on (one flag value per byte, one
  length segment and at most one call per DFA state) and refuses with :class:`UnsupportedSchemaError`.
- Counter flags: ``RESET`` (opening quote) zeroes the string counter, ``INC`` (a completed character)
  needs ``counter < cmax[state]``, ``CLOSE`` (closing quote) needs ``counter >= cmin[state]``, ``ROOM``
  starts a multi-byte character and needs ``counter < cmax``.

There is no DFA minimisation step: states are deduplicated by NFA member set only.
Cost: pure Python, roughly 5-15 us per DFA state; numba kernels (:mod:`realizar_ort.kernels.automaton_summary`)
for the per-state summaries. Not thread-safe while building; the returned :class:`Automaton` is immutable and
may be shared.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..kernels.automaton_summary import plain_loop_states, self_loop_bits
from .errors import GrammarTooLargeError, UnsupportedSchemaError

__all__ = [
    "CLOSE",
    "INC",
    "PLAIN_ASCII",
    "RESET",
    "ROOM",
    "UNBOUNDED",
    "Automaton",
    "Nfa",
    "determinise",
    "plain_loops_reference",
    "utf8_multibyte_paths",
]

INC, CLOSE, RESET, ROOM = 1, 2, 4, 8  # ROOM: starts a multi-byte character, needs counter < cmax
UNBOUNDED = 1 << 30

PLAIN_ASCII = [(0x20, 0x21), (0x23, 0x5B), (0x5D, 0x7F)]  # string bytes that need no escape


@dataclass(frozen=True)
class Automaton:
    """The compiled machine, read-only. State ``start`` begins the value; see :mod:`.json_schema`."""

    trans: np.ndarray  # int32 [states, 256], -1 = no consuming edge
    flags: np.ndarray  # uint8 [states, 256], INC | CLOSE | RESET
    final: np.ndarray  # bool [states]: the current rule's value is complete
    call_start: np.ndarray  # int32 [states]: callee start state or -1
    call_ret: np.ndarray  # int32 [states]: state to return to after the call
    cmin: np.ndarray  # int32 [states]: minLength of the string this state is inside (0 if none)
    cmax: np.ndarray  # int32 [states]: maxLength (UNBOUNDED if none)
    plain_loop: np.ndarray  # bool [states]: every plain string character keeps us here
    loop_bits: np.ndarray  # uint64 [states, 5]: bytes looping on the state (4 words), word 4 = any
    free_string: np.ndarray  # bool [states]: exactly the body of a free string (any escape form)
    counted: np.ndarray  # bool [states]: inside a string with length bounds
    start: int

    @property
    def num_states(self) -> int:
        return int(self.trans.shape[0])

    @property
    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.trans, self.flags, self.final, self.call_start, self.call_ret, self.cmin, self.cmax)


# ----------------------------------------------------------------------------------------------- NFA
class Nfa:
    """Thompson-construction NFA over bytes; ``state`` raises past ``max_states``. Append-only."""

    def __init__(self, max_states: int) -> None:
        self.eps: list[list[int]] = []
        self.edges: list[list[tuple[int, int, int, int]]] = []
        self.calls: list[list[tuple[str, int]]] = []
        self.seg: list[tuple[int, int] | None] = []
        self.free_bodies: set[int] = set()  # body states of free strings (any escape form)
        self.max_states = max_states

    def state(self, seg: tuple[int, int] | None = None) -> int:
        if len(self.eps) >= self.max_states:
            raise GrammarTooLargeError(f"schema needs more than {self.max_states} automaton states")
        self.eps.append([])
        self.edges.append([])
        self.calls.append([])
        self.seg.append(seg)
        return len(self.eps) - 1

    def edge(self, a: int, lo: int, hi: int, b: int, flags: int = 0) -> None:
        self.edges[a].append((lo, hi, b, flags))

    def literal(self, a: int, data: bytes, seg: tuple[int, int] | None = None, last_flags: int = 0) -> int:
        for i, byte in enumerate(data):
            b = self.state(seg)
            self.edge(a, byte, byte, b, last_flags if i == len(data) - 1 else 0)
            a = b
        return a


def utf8_multibyte_paths() -> list[list[tuple[int, int]]]:
    """Byte-range paths of every well-formed multi-byte UTF-8 character (no surrogates, <= U+10FFFF)."""
    return [
        [(0xC2, 0xDF), (0x80, 0xBF)],
        [(0xE0, 0xE0), (0xA0, 0xBF), (0x80, 0xBF)],
        [(0xE1, 0xEC), (0x80, 0xBF), (0x80, 0xBF)],
        [(0xED, 0xED), (0x80, 0x9F), (0x80, 0xBF)],
        [(0xEE, 0xEF), (0x80, 0xBF), (0x80, 0xBF)],
        [(0xF0, 0xF0), (0x90, 0xBF), (0x80, 0xBF), (0x80, 0xBF)],
        [(0xF1, 0xF3), (0x80, 0xBF), (0x80, 0xBF), (0x80, 0xBF)],
        [(0xF4, 0xF4), (0x80, 0x8F), (0x80, 0xBF), (0x80, 0xBF)],
    ]


_PLAIN_PATHS = [[r] for r in PLAIN_ASCII] + utf8_multibyte_paths()  # one plain string character, as byte ranges


# ---------------------------------------------------------------------------------- determinisation
def _closure(nfa: Nfa, states: frozenset[int] | set[int]) -> frozenset[int]:
    out = set(states)
    todo = list(states)
    while todo:
        s = todo.pop()
        for t in nfa.eps[s]:
            if t not in out:
                out.add(t)
                todo.append(t)
    return frozenset(out)


def determinise(nfa: Nfa, rule_keys: list[str], rule_frags: list[tuple[int, int]], max_states: int,
                tick: Callable[[], None]) -> Automaton:
    """Subset construction per rule; all rules' DFA states share one table. ~5-15 us per DFA state.

    ``rule_keys[i]`` names rule ``i`` and ``rule_frags[i]`` is its (start, final) NFA pair; rule 0 is the
    root. ``tick`` is called once per DFA state (the compiler's deadline check).
    """
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


def plain_loops_reference(trans: np.ndarray, flags: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """Per state: every plain string character (ASCII or whole UTF-8) leads back to it, counted once.

    The numpy reference of :func:`~realizar_ort.kernels.automaton_summary.plain_loop_states` (which
    :func:`determinise` uses; this one costs ~0.4 ms per grammar in numpy overhead). Vectorised over states.
    A byte range must go to a single state with a single flag value; anything else counts as "not a plain
    loop", which only costs the fast path, never correctness.
    """
    result = np.zeros(trans.shape[0], dtype=bool)
    rows = np.flatnonzero(trans[:, 0x61] == np.arange(trans.shape[0]))  # candidates: 'a' loops
    n = rows.shape[0]
    if n == 0:
        return result
    inc = np.where(counted[rows], INC, 0).astype(np.uint8)
    room = np.where(counted[rows], ROOM, 0).astype(np.uint8)
    t_rows = trans[rows]
    # string states never take a raw control byte or a byte that cannot start a UTF-8 character
    ok = (t_rows[:, :0x20].max(axis=1) < 0) & (t_rows[:, 0x80:0xC2].max(axis=1) < 0) & (t_rows[:, 0xF5:].max(axis=1) < 0)
    for path in _PLAIN_PATHS:
        cur = rows.copy()
        for i, (lo, hi) in enumerate(path):
            want = inc if i == len(path) - 1 else (room if i == 0 else np.zeros(n, np.uint8))
            src = np.where(cur >= 0, cur, 0)
            t = trans[src, lo:hi + 1]
            f = flags[src, lo:hi + 1]
            tmin = t.min(axis=1)
            ok &= (cur >= 0) & (tmin == t.max(axis=1)) & (tmin >= 0) & (f.min(axis=1) == want) & (f.max(axis=1) == want)
            cur = np.where(ok, tmin, -1)
        ok &= cur == rows
    result[rows] = ok
    return result
