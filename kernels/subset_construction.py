"""Subset construction of the schema compiler's NFA into the dense byte DFA (numba, ``@njit(cache=True)``).

:func:`subset_construction` is the inner loop of :func:`realizar_ort.grammar.automaton.determinise`: the
NFA comes in as flat arrays (CSR rows per NFA state: epsilon edges, byte-range edges with their counter
flags, calls), one rule after another; DFA states are numbered in the order the pure-Python construction
numbered them (a stack of pending states, targets in ascending byte order, then the call's return state),
so the table is the same one, bit for bit. It checks the same invariants and reports the first violation
as an error code (the caller raises): one flag value per byte, one length segment per state, one callee
per state, the state budget. ~1 us per DFA state instead of ~10 us in Python.

The hot loop calls no function that passes arrays back (numba refcounts every array it returns): the
helpers write in place and the bookkeeping grows only when a state could outgrow it.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit, objmode

__all__ = [
    "ERR_CALLEES", "ERR_FLAGS", "ERR_NONE", "ERR_SEG_MAX", "ERR_SEG_MIN", "ERR_STATES", "ERR_TIME", "NO_SEG", "csr_rows",
    "subset_construction",
]

ERR_NONE, ERR_STATES, ERR_FLAGS, ERR_SEG_MAX, ERR_SEG_MIN, ERR_CALLEES, ERR_TIME = 0, 1, 2, 3, 4, 5, 6
CLOCK_EVERY = 512  # states built between two looks at the clock (a look: ~2 us in object mode)
NO_SEG = -(1 << 31)  # seg_min of a state outside any string-length segment


@njit(cache=True, nogil=True)
def csr_rows(flat, n, width):
    """Per-state rows from ``flat`` (int32, runs of ``state, field_1 .. field_width``): row pointers (int64
    [n + 1]) and the fields (int32 [width, runs], each row contiguous), runs grouped by state in their
    original order (a stable counting sort: what ``argsort(kind="stable")`` gives)."""
    step = width + 1
    m = flat.shape[0] // step
    ptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(m):
        ptr[flat[i * step] + 1] += 1
    for s in range(n):
        ptr[s + 1] += ptr[s]
    pos = ptr[:n].copy()
    cols = np.empty((width, m), dtype=np.int32)
    for i in range(m):
        s = flat[i * step]
        p = pos[s]
        pos[s] = p + 1
        for c in range(width):
            cols[c, p] = flat[i * step + 1 + c]
    return ptr, cols


MAX_NEW = 260  # new DFA states one state can make: one per byte interval (<= 256), its call's return, a rule start


@njit(cache=True, nogil=True)
def _grown(a, need, fill):
    out = np.full(max(need, 2 * a.shape[0]), fill, dtype=a.dtype)
    out[:a.shape[0]] = a
    return out


@njit(cache=True, nogil=True)
def _grown2(a, need, fill):
    out = np.full((max(need, 2 * a.shape[0]), a.shape[1]), fill, dtype=a.dtype)
    out[:a.shape[0]] = a
    return out


@njit(cache=True, nogil=True, inline="always")
def _hash(members, k):
    h = np.uint64(k)
    for i in range(k):  # a splitmix64 step per member
        h ^= np.uint64(members[i]) + np.uint64(0x9E3779B97F4A7C15) + (h << np.uint64(6)) + (h >> np.uint64(2))
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
    return h


@njit(cache=True, nogil=True)
def _rehashed(pool, set_start, set_len, n_dfa, size):
    table = np.full(size, -1, dtype=np.int64)
    mask = size - 1
    for c in range(n_dfa):
        i = np.int64(_hash(pool[set_start[c]:set_start[c] + set_len[c]], set_len[c]) & np.uint64(mask))
        while table[i] >= 0:
            i = (i + 1) & mask
        table[i] = c
    return table


@njit(cache=True, nogil=True, inline="always")
def _closure(seeds, n_seeds, eps_ptr, eps_dst, stamp, gen, out):
    """The epsilon closure of ``seeds[:n_seeds]`` into ``out``, sorted; returns its size."""
    k = 0
    for i in range(n_seeds):
        s = seeds[i]
        if stamp[s] != gen:
            stamp[s] = gen
            out[k] = s
            k += 1
    j = 0
    while j < k:
        s = out[j]
        j += 1
        for e in range(eps_ptr[s], eps_ptr[s + 1]):
            t = eps_dst[e]
            if stamp[t] != gen:
                stamp[t] = gen
                out[k] = t
                k += 1
    _sort(out, k)
    return k


@njit(cache=True, nogil=True, inline="always")
def _sort(a, n):
    """Insertion sort of ``a[:n]`` (a state's members and edges: a handful), heapsort past 32."""
    if n > 32:
        a[:n].sort()
        return
    for i in range(1, n):
        x = a[i]
        j = i - 1
        while j >= 0 and a[j] > x:
            a[j + 1] = a[j]
            j -= 1
        a[j + 1] = x


@njit(cache=True, nogil=True, inline="always")
def _find(scratch, k, table, pool, set_start, set_len):
    """The DFA state of the member set ``scratch[:k]``, or ``-1 - slot`` (its free hash slot) if none."""
    mask = table.shape[0] - 1
    i = np.int64(_hash(scratch, k) & np.uint64(mask))
    while table[i] >= 0:
        c = table[i]
        if set_len[c] == k:
            same = True
            for j in range(k):
                if pool[set_start[c] + j] != scratch[j]:
                    same = False
                    break
            if same:
                return c
        i = (i + 1) & mask
    return -1 - i


@njit(cache=True)  # holds the GIL: it looks at the clock (object mode) every CLOCK_EVERY states
def subset_construction(eps_ptr, eps_dst, e_ptr, e_lo, e_hi, e_dst, e_flag, c_ptr, c_callee, c_ret, seg_min,
                        seg_max, rule_start_nfa, rule_final_nfa, max_states, budget_s):
    """Subset construction per rule; all rules' DFA states share one table (see the module docstring).

    NFA (``n`` states): epsilon edges ``eps_dst[eps_ptr[s]:eps_ptr[s + 1]]``, byte edges (``e_lo``..``e_hi``
    -> ``e_dst`` with flags ``e_flag``) the same way by ``e_ptr``, calls (callee rule index, return NFA
    state) by ``c_ptr``; ``seg_min``/``seg_max``: each state's string-length segment (``NO_SEG``: none).
    Rule ``r`` is the fragment ``rule_start_nfa[r]`` -> ``rule_final_nfa[r]``. Past ``max_states`` DFA states
    ``ERR_STATES``; ``budget_s`` seconds after it starts (JIT compilation not counted) ``ERR_TIME``.

    Returns (trans, flags, final, seg_of (an NFA member whose segment the DFA state has, -1: none), callee
    (rule index, -1: no call), call_ret, single (the lone NFA member or -1), rule_start (DFA state per rule),
    call_order (the DFA states with a call, in construction order), err, err_state (the DFA state being
    built when ``err`` != 0)).
    """
    n = eps_ptr.shape[0] - 1
    n_edges = e_ptr[n]
    stamp = np.zeros(n, dtype=np.int64)
    gen = 0
    scratch = np.empty(max(n, 1), dtype=np.int32)  # a member set (sorted)
    keys = np.empty(n_edges + 1, dtype=np.int64)  # a state's byte edges as sort keys (lo, hi, target, flag)
    points = np.empty(2 * n_edges + 2, dtype=np.int32)
    active = np.empty(n_edges + 1, dtype=np.int64)
    targets = np.empty(max(n_edges, c_ptr[n], 1), dtype=np.int32)
    pool = np.empty(4096, dtype=np.int32)  # the member sets, one after another
    pool_used = 0
    set_start = np.empty(1024, dtype=np.int64)
    set_len = np.empty(1024, dtype=np.int32)
    set_final = np.empty(1024, dtype=np.int32)
    table = np.full(4096, -1, dtype=np.int64)  # open addressing: member set -> DFA state
    n_dfa = 0
    pending = np.empty(1024, dtype=np.int32)  # a stack, as the Python construction's list
    n_pending = 0
    cap = min(max(n + n // 8, 64), max_states)  # most schemas make fewer DFA states than NFA states
    trans = np.full((cap, 256), -1, dtype=np.int32)
    flags = np.zeros((cap, 256), dtype=np.uint8)
    final = np.zeros(cap, dtype=np.bool_)
    seg_of = np.full(cap, -1, dtype=np.int32)
    callee = np.full(cap, -1, dtype=np.int32)
    call_ret = np.full(cap, -1, dtype=np.int32)
    call_order = np.empty(64, dtype=np.int32)
    n_calls = 0
    rule_start = np.full(rule_start_nfa.shape[0], -1, dtype=np.int32)
    err = ERR_NONE
    err_state = -1
    built = 0
    with objmode(start="float64"):
        start = time.perf_counter()
    deadline = start + budget_s
    r = 0
    q = -1  # the state being built (-1: a rule's start is next)
    while err == ERR_NONE:
        # room for every state this step can make (grown rarely: a reassigned array costs refcounting)
        if n_dfa + MAX_NEW > set_start.shape[0]:
            set_start = _grown(set_start, n_dfa + MAX_NEW, 0)
            set_len = _grown(set_len, n_dfa + MAX_NEW, 0)
            set_final = _grown(set_final, n_dfa + MAX_NEW, 0)
        if n_pending + MAX_NEW > pending.shape[0]:
            pending = _grown(pending, n_pending + MAX_NEW, 0)
        if 2 * (n_dfa + MAX_NEW) > table.shape[0]:
            table = _rehashed(pool, set_start, set_len, n_dfa, 2 * table.shape[0])
        # the member sets this step looks up, in order: a rule's start, or each byte interval's targets and
        # the call's return states of the next pending state
        if n_pending == 0:
            if r == rule_start_nfa.shape[0]:
                break
            q = -1
            targets[0] = rule_start_nfa[r]
            n_lookups = 1
            final_nfa = rule_final_nfa[r]
        else:
            n_pending -= 1
            q = pending[n_pending]
            built += 1
            if built % CLOCK_EVERY == 0:
                with objmode(now="float64"):
                    now = time.perf_counter()
                if now > deadline:
                    err = ERR_TIME
                    err_state = q
                    break
            if q >= trans.shape[0]:
                trans = _grown2(trans, q + 1, -1)
                flags = _grown2(flags, q + 1, 0)
                final = _grown(final, trans.shape[0], False)
                seg_of = _grown(seg_of, trans.shape[0], -1)
                callee = _grown(callee, trans.shape[0], -1)
                call_ret = _grown(call_ret, trans.shape[0], -1)
            ms = set_start[q]
            mk = set_len[q]
            final_nfa = set_final[q]
            ne = 0
            for j in range(mk):
                m = pool[ms + j]
                for e in range(e_ptr[m], e_ptr[m + 1]):
                    keys[ne] = (((np.int64(e_lo[e]) << 8) | np.int64(e_hi[e])) << 40) \
                        | (np.int64(e_dst[e]) << 8) | np.int64(e_flag[e])
                    ne += 1
            _sort(keys, ne)
            # the byte intervals between edge boundaries, ascending (the Python sweep's order)
            for j in range(ne):
                points[2 * j] = np.int32(keys[j] >> 48)
                points[2 * j + 1] = np.int32(((keys[j] >> 40) & 255) + 1)
            _sort(points, 2 * ne)
            n_points = 0
            for j in range(2 * ne):
                if n_points == 0 or points[j] != points[n_points - 1]:
                    points[n_points] = points[j]
                    n_points += 1
            # each interval's edges (an active list: the edges come sorted by their first byte)
            n_active = 0
            nxt = 0
            for p in range(n_points - 1):
                a = points[p]
                b = points[p + 1]
                while nxt < ne and np.int32(keys[nxt] >> 48) <= a:
                    active[n_active] = nxt
                    n_active += 1
                    nxt += 1
                fl = -1
                kept = 0
                for x in range(n_active):
                    j = active[x]
                    if np.int32((keys[j] >> 40) & 255) < a:
                        continue
                    active[kept] = j
                    kept += 1
                    f = np.int32(keys[j] & 255)
                    if fl >= 0 and f != fl:
                        err = ERR_FLAGS
                    fl = f
                n_active = kept
                if err != ERR_NONE:
                    break
                if kept == 0:
                    continue
                nt = 0
                for x in range(kept):
                    targets[nt] = np.int32((keys[active[x]] >> 8) & 0xFFFFFFFF)
                    nt += 1
                gen += 1
                k = _closure(targets, nt, eps_ptr, eps_dst, stamp, gen, scratch)
                found = _find(scratch, k, table, pool, set_start, set_len)
                if found < 0:
                    if n_dfa >= max_states:
                        err = ERR_STATES
                        break
                    if pool_used + k > pool.shape[0]:
                        pool = _grown(pool, pool_used + k, 0)
                    table[-1 - found] = n_dfa
                    found = n_dfa
                    pool[pool_used:pool_used + k] = scratch[:k]
                    set_start[found] = pool_used
                    set_len[found] = k
                    set_final[found] = final_nfa
                    pool_used += k
                    n_dfa += 1
                    pending[n_pending] = found
                    n_pending += 1
                for x in range(a, b):
                    trans[q, x] = found
                if fl != 0:
                    for x in range(a, b):
                        flags[q, x] = fl
            if err != ERR_NONE:
                err_state = q
                break
            # final, the one length segment of the members with edges, the one callee
            seg_at = -1
            seg_bad = False
            seg_bounded = False
            n_lookups = 0
            cal = -1
            cal_bad = False
            for j in range(mk):
                m = pool[ms + j]
                if m == final_nfa:
                    final[q] = True
                if e_ptr[m + 1] > e_ptr[m]:
                    if seg_min[m] != NO_SEG and seg_max[m] < (1 << 30):
                        seg_bounded = True
                    if seg_at < 0:
                        seg_at = m
                    elif seg_min[m] != seg_min[seg_at] or seg_max[m] != seg_max[seg_at]:
                        seg_bad = True
                for e in range(c_ptr[m], c_ptr[m + 1]):
                    if cal >= 0 and c_callee[e] != cal:
                        cal_bad = True
                    cal = c_callee[e]
                    targets[n_lookups] = c_ret[e]
                    n_lookups += 1
            if seg_bad:
                err = ERR_SEG_MAX if seg_bounded else ERR_SEG_MIN
                err_state = q
                break
            if seg_at >= 0 and seg_min[seg_at] != NO_SEG:
                seg_of[q] = seg_at
            if n_lookups == 0:
                continue
            if cal_bad:
                err = ERR_CALLEES
                err_state = q
                break
        # a rule's start, or the call's return states: one more member set
        gen += 1
        k = _closure(targets, n_lookups, eps_ptr, eps_dst, stamp, gen, scratch)
        found = _find(scratch, k, table, pool, set_start, set_len)
        if found < 0:
            if n_dfa >= max_states:
                err = ERR_STATES
                err_state = q
                break
            if pool_used + k > pool.shape[0]:
                pool = _grown(pool, pool_used + k, 0)
            table[-1 - found] = n_dfa
            found = n_dfa
            pool[pool_used:pool_used + k] = scratch[:k]
            set_start[found] = pool_used
            set_len[found] = k
            set_final[found] = final_nfa
            pool_used += k
            n_dfa += 1
            pending[n_pending] = found
            n_pending += 1
        if q < 0:
            rule_start[r] = found
            r += 1
        else:
            callee[q] = cal
            call_ret[q] = found
            if n_calls == call_order.shape[0]:
                call_order = _grown(call_order, n_calls + 1, 0)
            call_order[n_calls] = q
            n_calls += 1
    single = np.full(n_dfa, -1, dtype=np.int32)
    for c in range(n_dfa):
        if set_len[c] == 1:
            single[c] = pool[set_start[c]]
    if trans.shape[0] < n_dfa:  # an error left states unbuilt: the table is not read then
        n_dfa = trans.shape[0]
    return (trans[:n_dfa], flags[:n_dfa], final[:n_dfa], seg_of[:n_dfa], callee[:n_dfa], call_ret[:n_dfa],
            single[:n_dfa], rule_start, call_order[:n_calls], err, err_state)
