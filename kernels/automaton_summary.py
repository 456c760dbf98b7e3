"""Per-state summaries of a compiled byte automaton, for the schema compiler (numba; the Python/numpy
versions cost ~0.5 ms per grammar, these a few microseconds).

- :func:`plain_loop_states`: states where every plain JSON-string character (each byte-range path of
  ``paths``) leads back to the state, with the counter flags a string character needs.
- :func:`self_loop_bits`: per state, the 256-bit set of bytes that loop on it without flags.

Both are ``@njit(cache=True, nogil=True)`` and allocate only their outputs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["plain_loop_states", "self_loop_bits"]


@njit(cache=True, nogil=True)
def _plain_loop_states(trans, flags, counted, paths, path_len, inc_flag, room_flag, out):
    n = trans.shape[0]
    for q in range(n):
        out[q] = False
        if trans[q, 0x61] != q:  # candidates: 'a' loops
            continue
        ok = True
        # string states never take a raw control byte or a byte that cannot start a UTF-8 character
        for b in range(0x20):
            if trans[q, b] >= 0:
                ok = False
        for b in range(0x80, 0xC2):
            if trans[q, b] >= 0:
                ok = False
        for b in range(0xF5, 0x100):
            if trans[q, b] >= 0:
                ok = False
        inc = inc_flag if counted[q] else 0
        room = room_flag if counted[q] else 0
        p = 0
        while ok and p < paths.shape[0]:
            cur = q
            steps = path_len[p]
            for i in range(steps):
                lo = paths[p, i, 0]
                hi = paths[p, i, 1]
                want = inc if i == steps - 1 else (room if i == 0 else 0)
                t0 = trans[cur, lo]
                if t0 < 0:
                    ok = False
                    break
                for b in range(lo, hi + 1):
                    if trans[cur, b] != t0 or flags[cur, b] != want:
                        ok = False
                        break
                if not ok:
                    break
                cur = t0
            if ok and cur != q:
                ok = False
            p += 1
        out[q] = ok


_PATHS_ARRAYS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # path ranges -> arrays (a handful of keys)


def paths_array(paths: list[list[tuple[int, int]]]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 character paths (up to 4 byte ranges each) as the kernels take them: int32 [paths, 4, 2] of
    (lo, hi) and int32 [paths] lengths. Built once per distinct list of paths and shared (the kernels only
    read them): every grammar passes the same plain-character paths, ~40 us to build each time."""
    key = tuple(tuple(path) for path in paths)
    hit = _PATHS_ARRAYS.get(key)
    if hit is not None:
        return hit
    arr = np.zeros((len(paths), 4, 2), dtype=np.int32)
    lens = np.zeros(len(paths), dtype=np.int32)
    for p, path in enumerate(paths):
        lens[p] = len(path)
        for i, (lo, hi) in enumerate(path):
            arr[p, i] = (lo, hi)
    if len(_PATHS_ARRAYS) < 64:
        _PATHS_ARRAYS[key] = (arr, lens)
    return arr, lens


def plain_loop_states(trans: np.ndarray, flags: np.ndarray, counted: np.ndarray, paths: list[list[tuple[int, int]]],
                      inc_flag: int, room_flag: int) -> np.ndarray:
    """bool [states]: every path of byte ranges (each range going to one state with one flag value: ``room_flag``
    on a counted state's first byte of a multi-byte path, ``inc_flag`` on its last byte, 0 otherwise) leads
    from the state back to itself, and no raw control byte or impossible UTF-8 lead byte is taken."""
    arr, lens = paths_array(paths)
    out = np.zeros(trans.shape[0], dtype=bool)
    _plain_loop_states(trans, flags, counted, arr, lens, np.uint8(inc_flag), np.uint8(room_flag), out)
    return out


@njit(cache=True, nogil=True)
def _self_loop_bits(trans, flags, out):
    for q in range(trans.shape[0]):
        anyb = False
        for b in range(256):
            if trans[q, b] == q and flags[q, b] == 0:
                out[q, b >> 6] |= np.uint64(1) << np.uint64(b & 63)
                anyb = True
        out[q, 4] = np.uint64(1) if anyb else np.uint64(0)


def self_loop_bits(trans: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """uint64 [states, 5]: words 0-3 the bytes that loop on the state without flags, word 4 = 1 if any."""
    out = np.zeros((trans.shape[0], 5), dtype=np.uint64)
    _self_loop_bits(trans, flags, out)
    return out
