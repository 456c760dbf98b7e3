"""Whether two states of a compiled byte automaton accept the same byte strings from any configuration
(numba): the proof behind the mask walk's reference states (:mod:`realizar_ort.grammar.state_reference`).

:func:`equivalent_states` is a bounded coinductive (bisimulation) search on the step semantics of
:mod:`realizar_ort.kernels.token_mask`: two states are equivalent when they agree on acceptance, call and
return, the counter flags of every byte and the bounds those flags read, and each byte leads both to
equivalent states. The pairs met are assumed equivalent until one differs; past ``budget`` pairs the answer
is False (safe: the caller then walks). ``@njit(cache=True, nogil=True)``; allocates only its pair list.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["agreeing_first_bytes", "equivalent_states"]


@njit(cache=True, nogil=True, inline="always")
def _same_step(trans, flags, final, call_start, call_ret, cmin, cmax, x, y):
    if final[x] != final[y] or call_start[x] != call_start[y] or call_ret[x] != call_ret[y]:
        return False
    any_flag = False
    for b in range(256):
        if flags[x, b] != flags[y, b] or (trans[x, b] < 0) != (trans[y, b] < 0):
            return False
        if flags[x, b] != 0:
            any_flag = True
    # a counter flag checks the source state's bounds
    return not any_flag or (cmin[x] == cmin[y] and cmax[x] == cmax[y])


@njit(cache=True, nogil=True)
def equivalent_states(trans, flags, final, call_start, call_ret, cmin, cmax, x, y, budget):
    """True when every byte string does the same from ``x`` as from ``y`` (same counter, same stack)."""
    if x == y:
        return True
    if not _same_step(trans, flags, final, call_start, call_ret, cmin, cmax, x, y):
        return False
    pairs = np.empty((budget, 2), np.int64)  # met (each checked when met), pairs[done:n] still to expand
    pairs[0, 0] = x
    pairs[0, 1] = y
    n = 1
    done = 0
    while done < n:
        px = pairs[done, 0]
        py = pairs[done, 1]
        done += 1
        last_x = -1
        last_y = -1
        for b in range(256):
            tx = trans[px, b]
            ty = trans[py, b]
            if tx == ty or (tx == last_x and ty == last_y):  # rows come in runs of one target pair
                continue
            last_x = tx
            last_y = ty
            known = False
            for k in range(n):
                if pairs[k, 0] == tx and pairs[k, 1] == ty:
                    known = True
                    break
            if known:
                continue
            if n >= budget or not _same_step(trans, flags, final, call_start, call_ret, cmin, cmax, tx, ty):
                return False
            pairs[n, 0] = tx
            pairs[n, 1] = ty
            n += 1
    return True


@njit(cache=True, nogil=True)
def agreeing_first_bytes(trans, flags, final, call_start, call_ret, cmin, cmax, q, r, budget, weight, min_weight,
                         agree):
    """``agree[b]`` = True where byte ``b`` provably leads ``q`` and ``r`` to the same outcome from any
    configuration (same target up to :func:`equivalent_states`, same counter flags and bounds, or both
    refuse it and try the same call or return). A pair of distinct targets is only tried when its bytes'
    ``weight`` (e.g. how many tokens start with them) sums to ``min_weight`` or more: a light pair is left
    out of ``agree`` unproven (its tokens are few; a failed search costs more than walking them)."""
    same_exit = final[q] == final[r] and call_start[q] == call_start[r] and call_ret[q] == call_ret[r]
    same_bounds = cmin[q] == cmin[r] and cmax[q] == cmax[r]
    pair_of = np.full(256, -1, np.int64)  # each byte's distinct target pair, -1: decided without a search
    pair_x = np.empty(256, np.int64)
    pair_y = np.empty(256, np.int64)
    pair_w = np.zeros(256, np.int64)
    n = 0
    for b in range(256):
        x = trans[q, b]
        y = trans[r, b]
        agree[b] = False
        if x < 0 or y < 0:
            agree[b] = x < 0 and y < 0 and same_exit
            continue
        if flags[q, b] != flags[r, b] or (flags[q, b] != 0 and not same_bounds):
            continue
        if x == y:
            agree[b] = True
            continue
        k = 0
        while k < n and (pair_x[k] != x or pair_y[k] != y):
            k += 1
        if k == n:
            pair_x[n] = x
            pair_y[n] = y
            n += 1
        pair_of[b] = k
        pair_w[k] += weight[b]
    verdict = np.zeros(256, np.bool_)
    for k in range(n):
        if pair_w[k] >= min_weight:
            verdict[k] = equivalent_states(trans, flags, final, call_start, call_ret, cmin, cmax, pair_x[k],
                                           pair_y[k], budget)
    for b in range(256):
        if pair_of[b] >= 0:
            agree[b] = verdict[pair_of[b]]
