"""Forced bytes: from a grammar configuration, the bytes the automaton allows one at a time (fast-forward).

:func:`forced_bytes` tries all 256 bytes from the configuration (state, string counter, stack) with the
same byte step the mask kernel uses (:func:`realizar_ort.kernels.token_mask._step`); while exactly one byte
is accepted and the value is not complete (a complete value would allow a stop token), that byte is forced
and consumed. It stops at a choice, at the end of the value, at a dead end or at the output's capacity,
and leaves the set of bytes allowed where it stopped in ``next_allowed``.

Cost: 256 byte steps per forced byte (~1-2 us in numba). Nothing is changed outside the scratch arrays it
is given. :func:`forced_bytes_reference` is the plain-Python version the tests compare it with.
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError as exc:  # pragma: no cover - numba is a hard dependency
    raise ImportError("realizar_ort.kernels needs numba: pip install 'numba>=0.60'") from exc

from .token_mask import MAX_STEPS_PER_BYTE, S_FINAL, _columns, _step, _step_reference

__all__ = [
    "FORCED_CHOICE",
    "FORCED_DEAD",
    "FORCED_FULL",
    "FORCED_STOP",
    "allocate_forced_scratch",
    "forced_bytes",
    "forced_bytes_reference",
]

# why the forced run ended
FORCED_CHOICE = 0  # several bytes (or a byte and a stop token) are allowed
FORCED_STOP = 1  # the value is complete and no byte may follow: only a stop token is allowed
FORCED_DEAD = 2  # nothing is allowed (an error state, or a stack too deep)
FORCED_FULL = 3  # the output is full (more bytes may be forced)


def allocate_forced_scratch(max_depth: int, max_bytes: int) -> np.ndarray:
    """The stack arena :func:`forced_bytes` needs for runs of up to ``max_bytes`` bytes (int32 [n, 2])."""
    return np.zeros((max_depth + 2 * max_bytes + MAX_STEPS_PER_BYTE + 2, 2), np.int32)


@njit(cache=True, nogil=True)
def _forced(trans, flags, info, q, cnt, stack, stack_len, max_depth, arena, out, next_allowed):
    for j in range(stack_len):
        arena[j, 0] = stack[j]
        arena[j, 1] = j - 1
    top = stack_len - 1
    at = stack_len
    dep = stack_len
    n = 0
    while True:
        count = 0
        found = -1
        fq, ftop, fat, fdep, fcnt = q, top, at, dep, cnt
        for b in range(256):
            nq, ntop, nat, ndep, ncnt, _low, ok = _step(trans, flags, info, b, q, top, at, dep, cnt, arena,
                                                        max_depth)
            next_allowed[b] = ok
            if ok:
                count += 1
                found = b
                fq, ftop, fat, fdep, fcnt = nq, ntop, nat, ndep, ncnt
        complete = top < 0 and info[q, S_FINAL] != 0
        if complete:
            return n, FORCED_STOP if count == 0 else FORCED_CHOICE
        if count == 0:
            return n, FORCED_DEAD
        if count > 1:
            return n, FORCED_CHOICE
        if n >= out.shape[0] or fat + MAX_STEPS_PER_BYTE >= arena.shape[0]:
            return n, FORCED_FULL
        out[n] = found
        n += 1
        q, top, at, dep, cnt = fq, ftop, fat, fdep, fcnt


def forced_bytes(automaton_arrays: tuple, state: int, counter: int, stack: np.ndarray, stack_len: int,
                 max_depth: int, arena: np.ndarray, out: np.ndarray, next_allowed: np.ndarray) -> tuple[int, int]:
    """Write the forced bytes from the configuration into ``out`` (uint8); returns (count, why it ended).

    ``automaton_arrays``: the kernel layout (trans, flags, state_info, ...). ``arena``: from
    :func:`allocate_forced_scratch` with ``max_bytes >= out.shape[0]``. ``next_allowed`` (bool [256]) gets
    the bytes allowed where the run ended. ``stack`` is read, never written."""
    if arena.shape[0] < max_depth + 2 * out.shape[0] + MAX_STEPS_PER_BYTE + 2:
        raise ValueError(f"arena of {arena.shape[0]} rows is too small for {out.shape[0]} bytes at depth {max_depth}")
    if next_allowed.shape != (256,) or next_allowed.dtype != np.bool_:
        raise ValueError("next_allowed must be bool [256]")
    n, why = _forced(automaton_arrays[0], automaton_arrays[1], automaton_arrays[2], state, counter, stack,
                     stack_len, max_depth, arena, out, next_allowed)
    return int(n), int(why)


def forced_bytes_reference(automaton_arrays: tuple, state: int, counter: int, stack: list[int], max_depth: int,
                           limit: int) -> tuple[bytes, int, frozenset[int]]:
    """Plain Python :func:`forced_bytes`: (forced bytes, why it ended, bytes allowed where it ended)."""
    a = _columns(automaton_arrays)
    final = a[2]
    q, cnt, stack = state, counter, list(stack)
    out = bytearray()
    while True:
        results = {}
        for b in range(256):
            trial = list(stack)
            r = _step_reference(a, b, q, trial, cnt, max_depth)
            if r is not None:
                results[b] = (r[0], r[1], trial)
        allowed = frozenset(results)
        if not stack and final[q]:
            return bytes(out), FORCED_STOP if not results else FORCED_CHOICE, allowed
        if not results:
            return bytes(out), FORCED_DEAD, allowed
        if len(results) > 1:
            return bytes(out), FORCED_CHOICE, allowed
        if len(out) >= limit:
            return bytes(out), FORCED_FULL, allowed
        (b, (q, cnt, stack)), = results.items()
        out.append(b)
