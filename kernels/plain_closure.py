"""String states from which every run of (some) plain characters is accepted (numba): the search states of an
unanchored pattern and the loops of a negated or broad class, for the mask kernel's string shortcut.

A JSON-string body that loops on every plain character (``plain_loop``) has a cheap mask: the precomputed row of
plain tokens plus a walk of the few tokens that hold a quote or a backslash (the rest trie). The states of an
unanchored pattern (``"pattern": "wifi"`` is ``.*wifi.*``; ``[A-Za-z0-9]+`` is ``.*[A-Za-z0-9].*``) do not loop:
a letter moves them to the match-so-far states and on to the matched ones. But no run of plain characters can
kill them, so their masks are the same row plus the same walk. The same holds, with the row less the tokens
holding an excluded byte, for a set of states that all refuse the same excluded byte groups and take every
other plain character (``^[^/]+$``, a URI's body, pattern strings that refuse DEL). Before this they walked the
whole 128k-token trie (~2-4 ms per state on its first miss).

:func:`plain_closed_states` finds them: per state ``s`` the byte groups ``X(s)`` of the plain bytes it refuses
(a union of whole groups, else ``s`` is out; the non-ASCII group means every byte >= 0x80 is refused); then the
largest set ``C`` such that from each state of ``C`` every plain character outside ``X`` (each byte-range path of
``paths``) is taken without flags, ends in a state of ``C`` with the same ``X`` and passes only through
middle-of-character states that take exactly that path's next byte range; states of ``C`` and those middle
states are neither accepting nor calling, and a state of ``C`` refuses every control byte and every byte that
cannot start a UTF-8 character. Then a token of plain characters outside ``X`` (and one ending in part of a
character) is accepted from a state of ``C``, one with an ``X`` byte before any quote or backslash is refused,
and a token that every string state refuses (a raw control byte or invalid UTF-8 first) is refused: the
kernel's string shortcut is exact there with the row less the ``X`` tokens. ``@njit(cache=True, nogil=True)``;
allocates only small work arrays.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .automaton_summary import paths_array

__all__ = ["MAX_EXCLUDED_CHARS", "plain_closed_states"]

_NON_ASCII = 0x80
MAX_EXCLUDED_CHARS = 24  # multi-byte characters a closed state may refuse (``\\S``: the 19 Unicode spaces)


@njit(cache=True, nogil=True)
def _middle_ok(trans, final, call_start, t, lo, hi, memo, last):
    """``t`` (a middle-of-character state) takes exactly the bytes ``[lo, hi]`` (``last``: a subset of them, the
    character's last byte; the caller checks each). ``memo[t]``: (lo, hi, answer) of the last check of ``t``
    (middle states are shared by every string state of a grammar)."""
    key = lo + 256 if last else lo
    if memo[t, 0] == key and memo[t, 1] == hi:
        return memo[t, 2] == 1
    ok = not final[t] and call_start[t] < 0
    if ok:
        for b in range(256):
            inside = lo <= b <= hi
            if (trans[t, b] >= 0 and not inside) or (not last and trans[t, b] < 0 and inside):
                ok = False
                break
    memo[t, 0] = key
    memo[t, 1] = hi
    memo[t, 2] = 1 if ok else 0
    return ok


@njit(cache=True, nogil=True)
def _excluded(trans, plain, group_bit, s):
    """The byte groups of the plain bytes ``s`` refuses, or -1 (as all ones) when they are not whole groups."""
    refused = np.uint64(0)
    taken = np.uint64(0)
    for b in range(256):
        if plain[b]:
            if trans[s, b] < 0:
                refused |= group_bit[b]
            else:
                taken |= group_bit[b]
    return refused if (refused & taken) == 0 else ~np.uint64(0)


@njit(cache=True, nogil=True)
def _local(trans, flags, final, call_start, cmin, cmax, counted, inc_flag, room_flag, s, paths, path_len, non_ascii,
           ends, n_ends, chars, memo, work):
    """Whether ``s`` passes the checks of one state; collects the states its characters end in (into ``ends``,
    up to its length) and the multi-byte characters it refuses (``chars``, sorted, -1 after the last; each
    the character's UTF-8 bytes as a big-endian integer). Returns (-1, 0) when the state fails or an array
    overflows, else (how many ends, how many characters). ``paths``: the ASCII characters it must take
    (one-byte paths) and, if ``non_ascii``, the multi-byte ones too; every other byte >= 0x80 must be refused
    when not ``non_ascii``. A multi-byte character may be refused only at its last byte and only where the
    bytes before it are one known prefix (a middle state reached by a single byte sequence): then it is one
    character. In a length-bounded string (``counted``) a character carries the flags a plain loop's does
    (``room_flag`` on a multi-byte character's first byte, ``inc_flag`` on its last) and every state on the
    way has the same bounds; elsewhere no flag."""
    if final[s] or call_start[s] >= 0:
        return -1, 0
    for b in range(0x20):
        if trans[s, b] >= 0:
            return -1, 0
    for b in range(0x80, 0x100):
        if (not non_ascii or b < 0xC2 or b >= 0xF5) and trans[s, b] >= 0:
            return -1, 0
    cap = ends.shape[0]
    n_chars = 0
    for p in range(paths.shape[0]):
        if path_len[p] > 1 and not non_ascii:
            continue
        top = 1
        work[0, 0] = s
        work[0, 1] = 0
        work[0, 2] = 0  # the bytes read so far on this path, big-endian
        work[0, 3] = 1  # 1: reached by that one byte sequence only
        while top > 0:
            top -= 1
            t = work[top, 0]
            i = work[top, 1]
            prefix = work[top, 2]
            single = work[top, 3] == 1
            lo = paths[p, i, 0]
            hi = paths[p, i, 1]
            at_last = i == path_len[p] - 1
            if i > 0 and not _middle_ok(trans, final, call_start, t, lo, hi, memo, at_last):
                return -1, 0
            if counted[t] != counted[s] or (counted[s] and (cmin[t] != cmin[s] or cmax[t] != cmax[s])):
                return -1, 0
            want = 0
            if counted[s]:
                want = inc_flag if at_last else (room_flag if i == 0 else 0)
            last = -1
            for b in range(lo, hi + 1):
                u = trans[t, b]
                if u < 0 and at_last and i > 0 and single:  # one refused character: note it
                    code = (prefix << 8) | b
                    k = 0
                    while k < n_chars and chars[k] < code:
                        k += 1
                    if k < n_chars and chars[k] == code:
                        continue
                    if n_chars >= chars.shape[0]:
                        return -1, 0
                    for j in range(n_chars, k, -1):
                        chars[j] = chars[j - 1]
                    chars[k] = code
                    n_chars += 1
                    continue
                if u < 0 or flags[t, b] != want:
                    return -1, 0
                if u == last:
                    if not at_last:
                        work[top - 1, 3] = 0  # the item pushed for the previous byte: more than one prefix
                    continue
                last = u
                if at_last:
                    known = False
                    for k in range(n_ends):
                        if ends[k] == u:
                            known = True
                            break
                    if not known:
                        if n_ends >= cap:
                            return -1, 0
                        ends[n_ends] = u
                        n_ends += 1
                else:
                    if top >= work.shape[0]:
                        return -1, 0
                    work[top, 0] = u
                    work[top, 1] = i + 1
                    work[top, 2] = (prefix << 8) | b
                    work[top, 3] = 1 if single else 0
                    top += 1
    return n_ends, n_chars


@njit(cache=True, nogil=True)
def _closed(trans, flags, final, call_start, cmin, cmax, counted, inc_flag, room_flag, candidates, paths, path_len,
            plain, group_bit, max_ends, out, out_x, chars, index):
    n = trans.shape[0]
    ends = np.full((candidates.shape[0], max_ends), -1, np.int64)
    counts = np.zeros(candidates.shape[0], np.int64)
    alive = np.zeros(n, np.bool_)
    xs = np.zeros(n, np.uint64)
    one_byte = np.zeros((paths.shape[0] + 128, 4, 2), np.int32)  # ASCII ranges split at excluded bytes: < 128 more
    one_len = np.zeros(paths.shape[0] + 128, np.int32)
    non_ascii_bit = group_bit[_NON_ASCII]
    memo = np.full((n, 3), -1, np.int64)
    work = np.empty((64, 4), np.int64)  # (state, position, prefix, single) still to expand along one path
    for k in range(candidates.shape[0]):
        s = candidates[k]
        x = _excluded(trans, plain, group_bit, s)
        if x == ~np.uint64(0):
            continue
        no_lead = True
        for b in range(0xC2, 0xF5):
            if trans[s, b] >= 0:
                no_lead = False
        if no_lead:
            x |= non_ascii_bit  # no multi-byte character: every non-ASCII token is refused (checked below)
        # the paths s must take: multi-byte ones unless non-ASCII is excluded, ASCII bytes outside x
        m = 0
        for p in range(paths.shape[0]):
            if path_len[p] > 1:
                one_byte[m] = paths[p]
                one_len[m] = path_len[p]
                m += 1
                continue
            lo = paths[p, 0, 0]
            hi = paths[p, 0, 1]
            b = lo
            while b <= hi:  # split the range at excluded bytes
                while b <= hi and (group_bit[b] & x) != 0:
                    b += 1
                if b > hi:
                    break
                e = b
                while e + 1 <= hi and (group_bit[e + 1] & x) == 0:
                    e += 1
                one_byte[m, 0, 0] = b
                one_byte[m, 0, 1] = e
                one_len[m] = 1
                m += 1
                b = e + 1
        c, _n_chars = _local(trans, flags, final, call_start, cmin, cmax, counted, inc_flag, room_flag, s,
                             one_byte[:m], one_len[:m], (x & non_ascii_bit) == 0, ends[k], 0, chars[k], memo, work)
        counts[k] = c
        if c >= 0:
            alive[s] = True
            xs[s] = x
            index[s] = k
    changed = True
    while changed:  # the greatest fixed point: drop states whose characters may end outside the set
        changed = False
        for k in range(candidates.shape[0]):
            s = candidates[k]
            if not alive[s]:
                continue
            for j in range(counts[k]):
                e = ends[k, j]
                same = alive[e] and xs[e] == xs[s] and counted[e] == counted[s] and cmin[e] == cmin[s] \
                    and cmax[e] == cmax[s]
                if same:
                    for j2 in range(chars.shape[1]):
                        if chars[index[e], j2] != chars[k, j2]:
                            same = False
                            break
                if not same:
                    alive[s] = False
                    changed = True
                    break
    for s in range(n):
        out[s] = alive[s]
        out_x[s] = xs[s] if alive[s] else np.uint64(0)
        if not alive[s]:
            index[s] = -1


@njit(cache=True, nogil=True)
def _candidates(trans, flags, plain, other_flags, least):
    """The states taking at least ``least`` plain bytes with no flag in ``other_flags``."""
    n = trans.shape[0]
    found = np.empty(n, np.int64)
    m = 0
    for s in range(n):
        taken = 0
        for b in range(0x20, 0x80):
            if plain[b] and trans[s, b] >= 0 and (flags[s, b] & other_flags) == 0:
                taken += 1
                if taken >= least:
                    found[m] = s
                    m += 1
                    break
    return found[:m].copy()


def plain_closed_states(automaton_arrays: tuple, counted: np.ndarray, paths: list[list[tuple[int, int]]],
                        group_bit: np.ndarray, inc_flag: int, room_flag: int, max_ends: int = 32,
                        max_chars: int = MAX_EXCLUDED_CHARS) -> tuple[np.ndarray, np.ndarray, dict[int, tuple]]:
    """(bool [states], uint64 [states], {state: characters}): the states of the module docstring's sets ``C``
    (a plain loop without counter is one), their excluded byte groups ``X`` (0: every plain character is taken)
    and, for those refusing some multi-byte characters (``.`` refuses U+2028 and U+2029, ``\\S`` the Unicode
    spaces), those characters' UTF-8 bytes (a sorted tuple of ``bytes``, at most ``max_chars``).
    ``paths``: one plain character as byte-range paths (``automaton._PLAIN_PATHS``: one-byte ASCII ranges,
    then the multi-byte UTF-8 ones); ``group_bit``: uint64 [256], each byte's group (``vocab.BYTE_GROUP``) as a
    bit. ``automaton_arrays``: (trans, flags, final, call_start, call_ret, cmin, cmax) (``Automaton.arrays``).
    A ``counted`` state (inside a length-bounded string) is in a set of counted states with its bounds, whose
    characters carry the counter flags of a plain loop (``inc_flag``, ``room_flag``): the kernel's string rows
    by room left apply there as in a bounded plain loop. A state whose characters end in more than
    ``max_ends`` distinct states is left out (safe: it keeps the whole walk). Tens of microseconds per grammar:
    only states that take at least 16 plain ASCII bytes (without flags but the counter's) are examined."""
    trans, flags, final, call_start, _ret, cmin, cmax = automaton_arrays
    plain = np.zeros(256, dtype=np.bool_)
    for path in paths:
        if len(path) == 1:
            plain[path[0][0]:path[0][1] + 1] = True
    candidates = _candidates(trans, flags, plain, np.uint8(~inc_flag & 0xFF), 16)
    arr, lens = paths_array(paths)
    out = np.zeros(trans.shape[0], dtype=bool)
    out_x = np.zeros(trans.shape[0], dtype=np.uint64)
    refused: dict[int, tuple] = {}
    if candidates.shape[0]:
        chars = np.full((candidates.shape[0], max_chars), -1, np.int64)
        index = np.full(trans.shape[0], -1, np.int64)
        _closed(trans, flags, final.astype(np.bool_), call_start, cmin, cmax, counted.astype(np.bool_),
                np.uint8(inc_flag), np.uint8(room_flag), candidates, arr, lens, plain, group_bit.astype(np.uint64),
                max_ends, out, out_x, chars, index)
        for s in np.flatnonzero((index >= 0) & out).tolist():
            row = chars[index[s]]
            if row[0] >= 0:
                refused[s] = tuple(int(c).to_bytes((int(c).bit_length() + 7) // 8, "big") for c in row[row >= 0])
    return out, out_x, refused
