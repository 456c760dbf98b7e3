"""The byte automaton: its flags, the NFA we build, and subset construction into the dense DFA.

- :class:`Nfa` is the Thompson-construction scratchpad the schema walk (:mod:`.schema_compiler`) writes
  into: epsilon edges, byte-range edges with counter flags, ``calls`` for recursive rules, and the
  string-length segment (``seg``) each state belongs to.
- :func:`determinise` runs the subset construction once per rule (numba:
  :mod:`realizar_ort.kernels.subset_construction`); all rules' DFA states share one ``[states, 256]`` table. It checks the invariants the kernel relies on (one flag value per byte, one
  length segment and at most one call per DFA state) and refuses with :class:`UnsupportedSchemaError`.
- Counter flags: ``RESET`` (opening quote) zeroes the string counter, ``INC`` (a completed character)
  needs ``counter < cmax[state]``, ``CLOSE`` (closing quote) needs ``counter >= cmin[state]``, ``ROOM``
  starts a multi-byte character and needs ``counter < cmax``.

There is no DFA minimisation step: states are deduplicated by NFA member set only.
Cost: building the NFA is Python (~0.3 us per edge); determinising is ~1-2 us per DFA state, most of it writing
the table; numba kernels (:mod:`realizar_ort.kernels.automaton_summary`) for the per-state summaries. Not thread-safe while building; the returned :class:`Automaton` is immutable and
may be shared.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..kernels.automaton_summary import plain_loop_states, self_loop_bits
from ..kernels.subset_construction import (
    ERR_CALLEES,
    ERR_FLAGS,
    ERR_NONE,
    ERR_SEG_MAX,
    ERR_SEG_MIN,
    ERR_STATES,
    ERR_TIME,
    NO_SEG,
    csr_rows,
    subset_construction,
)
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
    """Thompson-construction NFA over bytes; ``state`` raises past ``max_states``. Append-only.

    Edges live in flat lists of ints (``eps``: ``a, b`` per edge; ``edges``: ``a, lo, hi, b, flags``), not in
    per-state lists: a large schema makes 10^5 states, and as many small lists only fed Python's cyclic
    garbage collector (its full passes were a third of a large compile); flat ints also reach numpy fast."""

    def __init__(self, max_states: int) -> None:
        self.eps: list[int] = []
        self.edges: list[int] = []
        self.calls: list[tuple[int, str, int]] = []  # (state, rule key, return state)
        self.seg_ids: list[int] = []  # per state: its string-length segment, an index into ``segments``
        self.segments: list[tuple[int, int] | None] = [None]  # distinct segments (0: none)
        self._segment_ids: dict[tuple[int, int], int] = {}
        self.free_bodies: set[int] = set()  # body states of free strings (any escape form)
        self.max_states = max_states

    @property
    def num_states(self) -> int:
        return len(self.seg_ids)

    @property
    def seg(self) -> list[tuple[int, int] | None]:
        """Per state: its string-length segment (``(min, max)`` or None). A fresh list (for tests)."""
        return [self.segments[i] for i in self.seg_ids]

    def segment_id(self, seg: tuple[int, int] | None) -> int:
        if seg is None:
            return 0
        sid = self._segment_ids.get(seg)
        if sid is None:
            sid = self._segment_ids[seg] = len(self.segments)
            self.segments.append(seg)
        return sid

    def state(self, seg: tuple[int, int] | None = None) -> int:
        n = len(self.seg_ids)
        if n >= self.max_states:
            raise GrammarTooLargeError(f"schema needs more than {self.max_states} automaton states")
        self.seg_ids.append(0 if seg is None else self.segment_id(seg))
        return n

    def states(self, k: int, seg: tuple[int, int] | None = None) -> int:
        """``k`` fresh states (numbered from the returned one on), all in segment ``seg``."""
        n = len(self.seg_ids)
        if n + k > self.max_states:
            raise GrammarTooLargeError(f"schema needs more than {self.max_states} automaton states")
        self.seg_ids += [self.segment_id(seg)] * k
        return n

    def epsilon(self, a: int, b: int) -> None:
        self.eps += (a, b)

    def edge(self, a: int, lo: int, hi: int, b: int, flags: int = 0) -> None:
        self.edges += (a, lo, hi, b, flags)

    def call(self, a: int, key: str, ret: int) -> None:
        self.calls.append((a, key, ret))

    def edges_of(self, a: int, since: int = 0) -> list[tuple[int, int, int, int]]:
        """State ``a``'s byte edges ``(lo, hi, b, flags)``, among those added after ``len(self.edges)`` was
        ``since``."""
        e = self.edges
        return [(e[i + 1], e[i + 2], e[i + 3], e[i + 4]) for i in range(since, len(e), 5) if e[i] == a]

    def literal(self, a: int, data: bytes, seg: tuple[int, int] | None = None, last_flags: int = 0) -> int:
        """A chain of fresh states spelling ``data`` from ``a``; returns its last state (``a`` if empty)."""
        k = len(data)
        if k == 1:  # most literals: one structural byte
            n = len(self.seg_ids)
            if n >= self.max_states:
                raise GrammarTooLargeError(f"schema needs more than {self.max_states} automaton states")
            self.seg_ids.append(0 if seg is None else self.segment_id(seg))
            self.edges += (a, data[0], data[0], n, last_flags)
            return n
        if not k:
            return a
        n = self.states(k, seg)
        edges = self.edges
        for i, byte in enumerate(data):  # state n + i follows byte i
            edges += (a, byte, byte, n + i, 0)
            a = n + i
        if last_flags:
            edges[-1] = last_flags
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
_ERRORS = {
    ERR_FLAGS: ("maxLength", "alternatives overlap with different string length bounds"),
    ERR_SEG_MAX: ("maxLength", "overlapping alternatives with different string length bounds"),
    ERR_SEG_MIN: ("minLength", "overlapping alternatives with different string length bounds"),
    ERR_CALLEES: ("$ref", "alternatives call different recursive rules here"),
}


def _csr(n: int, flat: list[int], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-state rows from a flat list of ``state, *fields`` runs: row pointers and the fields (int32
    [width, runs], one contiguous row per field), by state (the kernel :func:`csr_rows`). The list goes to
    int32 through ``struct`` (about twice as fast as ``np.array`` on a list of ints; every value is a state,
    byte, flag or rule index, far inside int32)."""
    return csr_rows(np.frombuffer(struct.pack(f"{len(flat)}i", *flat), dtype=np.int32), n, width)


def determinise(nfa: Nfa, rule_keys: list[str], rule_frags: list[tuple[int, int]], max_states: int,
                tick: Callable[[], None], deadline: float = math.inf) -> Automaton:
    """Subset construction per rule; all rules' DFA states share one table.

    ``rule_keys[i]`` names rule ``i`` and ``rule_frags[i]`` is its (start, final) NFA pair; rule 0 is the
    root. The construction itself runs in numba (:func:`~realizar_ort.kernels.subset_construction.
    subset_construction`, well under 1 us per DFA state, bounded by ``max_states``); this converts the NFA
    to flat arrays (~0.3 us per NFA edge), raises the refusals it reports and adds the per-state summaries.
    ``tick`` (the compiler's deadline check) is called once; ``deadline`` (``time.perf_counter()`` seconds)
    bounds the construction itself.
    """
    tick()
    rule_index = {key: i for i, key in enumerate(rule_keys)}
    n_nfa = nfa.num_states
    eps_ptr, eps = _csr(n_nfa, nfa.eps, 1)
    e_ptr, edges = _csr(n_nfa, nfa.edges, 4)
    c_ptr, calls = _csr(n_nfa, [x for a, key, ret in nfa.calls for x in (a, rule_index[key], ret)], 2)
    ids = np.array(nfa.seg_ids, dtype=np.int32)
    seg_min = np.array([NO_SEG] + [lo for lo, _ in nfa.segments[1:]], dtype=np.int32)[ids]
    seg_max = np.array([0] + [hi for _, hi in nfa.segments[1:]], dtype=np.int32)[ids]
    frags = np.asarray(rule_frags, dtype=np.int32).reshape(-1, 2)
    (trans, flags, final, seg_of, callee, ret, single, rule_start, call_order, err,
     err_state) = subset_construction(eps_ptr, eps[0], e_ptr, edges[0], edges[1], edges[2], edges[3], c_ptr, calls[0],
                                      calls[1], seg_min, seg_max, frags[:, 0].copy(), frags[:, 1].copy(),
                                      max_states, deadline - time.perf_counter())
    if err == ERR_STATES:
        raise GrammarTooLargeError(f"schema needs more than {max_states} automaton states")
    if err == ERR_TIME:
        raise GrammarTooLargeError("schema compilation exceeded its time budget (determinisation)")
    if err != ERR_NONE:
        keyword, reason = _ERRORS[err]
        raise UnsupportedSchemaError(keyword, "#", reason)
    n = trans.shape[0]
    call_start = np.full(n, -1, dtype=np.int32)
    call_ret = np.full(n, -1, dtype=np.int32)
    for lo in range(0, call_order.shape[0], 4096):  # the calls in construction order, a block at a time (a
        qs = call_order[lo:lo + 4096]  # block's two row copies stay ~8 MB): the first bad one is the refusal
        rules = callee[qs]
        cs = rule_start[rules]
        starts = trans[cs]
        left = starts.max(axis=1) < 0
        bad = left | np.any((starts >= 0) & (trans[qs] >= 0), axis=1)
        if bad.any():
            i = int(np.argmax(bad))
            key = rule_keys[rules[i]]
            if left[i]:
                raise UnsupportedSchemaError("$ref", key, "left-recursive reference")
            raise UnsupportedSchemaError("$ref", key, "recursive reference overlaps an alternative")
        call_start[qs] = cs
        call_ret[qs] = ret[qs]
    counted = seg_of >= 0
    at = np.where(counted, seg_of, 0)
    cmin = np.where(counted, seg_min[at], 0).astype(np.int32)
    cmax = np.where(counted, seg_max[at], UNBOUNDED).astype(np.int32)
    plain = plain_loop_states(trans, flags, counted, _PLAIN_PATHS, INC, ROOM)
    loop_bits = self_loop_bits(trans, flags)
    free = np.zeros(n, dtype=bool)
    if nfa.free_bodies:
        bodies = np.zeros(n_nfa, dtype=bool)
        bodies[list(nfa.free_bodies)] = True
        free[single >= 0] = bodies[single[single >= 0]]
    free &= plain
    return Automaton(trans, flags, final, call_start, call_ret, cmin, cmax, plain, loop_bits, free, counted,
                     int(rule_start[0]))


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
