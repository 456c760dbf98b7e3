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
def agreeing_first_bytes(trans, flags, final, call_start, call_ret, cmin, cmax, q, r, budget, agree):
    """``agree[b]`` = True where byte ``b`` provably leads ``q`` and ``r`` to the same outcome from any
    configuration (same target up to :func:`equivalent_states`, same counter flags and bounds, or both
    refuse it and try the same call or return)."""
    same_exit = final[q] == final[r] and call_start[q] == call_start[r] and call_ret[q] == call_ret[r]
    same_bounds = cmin[q] == cmin[r] and cmax[q] == cmax[r]
    # verdicts per distinct target pair, most rows have a handful
    seen_x = np.empty(256, np.int64)
    seen_y = np.empty(256, np.int64)
    seen_v = np.empty(256, np.bool_)
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
        v = False
        found = False
        for k in range(n):
            if seen_x[k] == x and seen_y[k] == y:
                v = seen_v[k]
                found = True
                break
        if not found:
            v = equivalent_states(trans, flags, final, call_start, call_ret, cmin, cmax, x, y, budget)
            seen_x[n] = x
            seen_y[n] = y
            seen_v[n] = v
            n += 1
        agree[b] = v
