"""String states from which every run of plain characters is accepted (numba): the search states of an
unanchored pattern, for the mask kernel's string shortcut.

A JSON-string body that loops on every plain character (``plain_loop``) has a cheap mask: the precomputed row of
plain tokens plus a walk of the few tokens that hold a quote or a backslash. The states of an unanchored pattern
(``"pattern": "wifi"`` is ``.*wifi.*``; ``[A-Za-z0-9]+`` is ``.*[A-Za-z0-9].*``) do not loop: a letter moves them
to the match-so-far states and on to the matched ones. But no run of plain characters can kill them, so their
masks are the same row plus the same walk. Before this they walked the whole 128k-token trie (~3.5 ms per
state on its first miss). :func:`plain_closed_states` finds them: the largest set ``C`` of states such that from
each state of ``C`` every plain character (each byte-range path of ``paths``) is taken without flags, ends in
``C`` and passes only through middle-of-character states that take exactly that path's next byte range;
states of ``C`` and those middle states are neither accepting nor calling, and a state of ``C`` refuses every
control byte and every byte that cannot start a UTF-8 character. Then a token of plain characters (and one
ending in part of a character) is accepted from a state of ``C`` and a token that every string state refuses
(a raw control byte or invalid UTF-8 first) is refused, exactly as from a plain loop: the kernel's string
shortcut is exact there. ``@njit(cache=True, nogil=True)``; allocates only small work arrays.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["plain_closed_states"]


@njit(cache=True, nogil=True)
def _middle_ok(trans, flags, final, call_start, t, lo, hi):
    """``t`` (a middle-of-character state) takes exactly the bytes ``[lo, hi]``, without flags."""
    if final[t] or call_start[t] >= 0:
        return False
    for b in range(256):
        inside = lo <= b <= hi
        if (trans[t, b] >= 0) != inside or (inside and flags[t, b] != 0):
            return False
    return True


@njit(cache=True, nogil=True)
def _local(trans, flags, final, call_start, s, paths, path_len, ends, n_ends):
    """Whether ``s`` passes the checks of one state; collects the states its plain characters end in (into
    ``ends``, up to its length; returns -1 when the state fails or ``ends`` overflows, else how many).
    DEL (0x7F) is one of ``paths`` or else must be refused."""
    if final[s] or call_start[s] >= 0:
        return -1
    del_path = False
    for p in range(paths.shape[0]):
        if path_len[p] == 1 and paths[p, 0, 0] <= 0x7F <= paths[p, 0, 1]:
            del_path = True
    if not del_path and trans[s, 0x7F] >= 0:
        return -1
    for b in range(0x20):
        if trans[s, b] >= 0:
            return -1
    for b in range(0x80, 0xC2):
        if trans[s, b] >= 0:
            return -1
    for b in range(0xF5, 0x100):
        if trans[s, b] >= 0:
            return -1
    cap = ends.shape[0]
    work = np.empty((64, 2), np.int64)  # (state, position) still to expand along one path
    for p in range(paths.shape[0]):
        top = 1
        work[0, 0] = s
        work[0, 1] = 0
        while top > 0:
            top -= 1
            t = work[top, 0]
            i = work[top, 1]
            lo = paths[p, i, 0]
            hi = paths[p, i, 1]
            if i > 0 and not _middle_ok(trans, flags, final, call_start, t, lo, hi):
                return -1
            last = -1
            for b in range(lo, hi + 1):
                u = trans[t, b]
                if u < 0 or flags[t, b] != 0:
                    return -1
                if u == last:
                    continue
                last = u
                if i + 1 == path_len[p]:
                    known = False
                    for k in range(n_ends):
                        if ends[k] == u:
                            known = True
                            break
                    if not known:
                        if n_ends >= cap:
                            return -1
                        ends[n_ends] = u
                        n_ends += 1
                else:
                    if top >= work.shape[0]:
                        return -1
                    work[top, 0] = u
                    work[top, 1] = i + 1
                    top += 1
    return n_ends


@njit(cache=True, nogil=True)
def _closed(trans, flags, final, call_start, candidates, paths, path_len, max_ends, out):
    n = trans.shape[0]
    ends = np.full((candidates.shape[0], max_ends), -1, np.int64)
    counts = np.zeros(candidates.shape[0], np.int64)
    alive = np.zeros(n, np.bool_)
    for k in range(candidates.shape[0]):
        m = _local(trans, flags, final, call_start, candidates[k], paths, path_len, ends[k], 0)
        counts[k] = m
        if m >= 0:
            alive[candidates[k]] = True
    changed = True
    while changed:  # the greatest fixed point: drop states whose characters may end outside the set
        changed = False
        for k in range(candidates.shape[0]):
            s = candidates[k]
            if not alive[s]:
                continue
            for j in range(counts[k]):
                if not alive[ends[k, j]]:
                    alive[s] = False
                    changed = True
                    break
    for s in range(n):
        out[s] = alive[s]


def _path_array(paths: list[list[tuple[int, int]]]) -> tuple[np.ndarray, np.ndarray]:
    arr = np.zeros((len(paths), 4, 2), dtype=np.int32)
    lens = np.zeros(len(paths), dtype=np.int32)
    for p, path in enumerate(paths):
        lens[p] = len(path)
        for i, (lo, hi) in enumerate(path):
            arr[p, i] = (lo, hi)
    return arr, lens


def _without_del(paths: list[list[tuple[int, int]]]) -> list[list[tuple[int, int]]]:
    out = []
    for path in paths:
        if len(path) == 1 and path[0][0] <= 0x7F <= path[0][1]:
            lo, hi = path[0]
            out += [[r] for r in ((lo, 0x7E), (0x80, hi)) if r[0] <= r[1]]
        else:
            out.append(path)
    return out


def plain_closed_states(trans: np.ndarray, flags: np.ndarray, final: np.ndarray, call_start: np.ndarray,
                        counted: np.ndarray, paths: list[list[tuple[int, int]]], max_ends: int = 32) -> np.ndarray:
    """int8 [states]: 1 where every run of plain string characters is accepted as described in the module
    docstring (a plain loop without counter is one), 2 where the same holds with DEL (0x7F) left out of the
    plain characters and refused by every state of the set (pattern strings refuse it), 0 elsewhere.
    ``paths``: one plain character as byte-range paths (``automaton._PLAIN_PATHS``); ``counted`` states
    (inside a length-bounded string) are never in a set. A state whose characters end in more than
    ``max_ends`` distinct states is left out (safe: it keeps the whole walk). Tens of microseconds per
    grammar: only states that take ``a`` and a space without flags are examined."""
    candidates = np.flatnonzero((trans[:, 0x61] >= 0) & (flags[:, 0x61] == 0) & (trans[:, 0x20] >= 0)
                                & (flags[:, 0x20] == 0) & ~counted).astype(np.int64)
    out = np.zeros(trans.shape[0], dtype=np.int8)
    if candidates.shape[0] == 0:
        return out
    final = final.astype(np.bool_)
    found = np.zeros(trans.shape[0], dtype=bool)
    for value, char_paths in ((1, paths), (2, _without_del(paths))):
        arr, lens = _path_array(char_paths)
        _closed(trans, flags, final, call_start, candidates, arr, lens, max_ends, found)
        out[found] = value
    return out
