"""Sparse masks of literal states, computed once per grammar (numba).

A *literal* state takes exactly one byte, with a plain transition to another state, makes no call, is not
accepting, not a string body, has no counter and no class shortcut: the characters of a property key, a
``const``, punctuation. Its mask is a few tokens (the prefixes of what follows, and the tokens running on into
the next values), so a grammar computes all of them when it is built, in one call, as a list of non-zero mask
words per state, instead of one 16 KB trie-walk miss per state at run time.

- :func:`literal_states`: the literal states of a grammar and their bytes.
- :func:`fill_masks_sparse`: their masks from the start configuration (empty stack, counter 0), with the stack
  depth each one read (-1: its walk pushed), so the caller keeps only those that hold in any configuration.

The walk is :mod:`realizar_ort.kernels.token_mask`'s, copied here with a setter that lists the words it
touches (a flag in the shared walk cost the dense hot path up to 40% on some states); the tests compare every
literal state's sparse mask with the dense kernel. ``@njit(cache=True, nogil=True)``; about 0.3 us per literal
state at 128k tokens (the depth-2 node table of the vocabulary skips the first byte's siblings).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .token_mask import INC, L_AT, L_CLS, L_CNT, L_DEP, L_Q, L_TOP, S_CALL, S_CMAX, S_FINAL, S_PLAIN, _step

__all__ = ["fill_masks_sparse", "literal_states"]


@njit(cache=True, nogil=True, inline="always")
def _set_range_listed(bits, ids, lo, hi, touched):
    for k in range(lo, hi):
        tid = ids[k]
        w = tid >> 5
        if bits[w] == 0:
            n = touched[0] + 1
            touched[n] = w
            touched[0] = n
        bits[w] |= np.uint32(1) << np.uint32(tid & 31)


@njit(cache=True, nogil=True, inline="always")
def _walk_sparse(nodes, ids, sub, first, last, trans, flags, info, state_groups, max_token_bytes, plain_groups,
                 stack_len, max_depth, arena, lv, bits, class_groups, class_exit, group_bit, read, touched):
    """:func:`realizar_ort.kernels.token_mask._walk` (keep the two in step), listing each mask word it makes
    non-zero in ``touched`` (``touched[0]``: how many) so the caller can read them and re-zero ``bits``."""
    i = first
    while i < last:
        d = nodes[i, 1]
        q = lv[d - 1, L_Q]
        sg = sub[i]
        b = nodes[i, 0]
        cls = lv[d - 1, L_CLS]
        in_class = False
        if cls != 0:
            if (sg & class_exit) == 0:
                i = nodes[i, 2]  # only class tokens (the caller's row) or rejected ones below
                continue
            in_class = (class_groups & group_bit[b]) != 0
        lg = state_groups[q, 0]
        if lg != 0 and (sg & ~lg) == 0:  # any string of the bytes below is accepted from q: all tokens are
            end = nodes[i, 2]
            _set_range_listed(bits, ids, nodes[i, 3], nodes[end, 3], touched)
            i = end
            continue
        sp = info[q, S_PLAIN]
        if sp != 0 and (sg & ~plain_groups) == 0 and (sp == 1 or (sg & state_groups[q, 3]) == 0):
            end = nodes[i, 2]
            room = info[q, S_CMAX] - lv[d - 1, L_CNT] + d - 1  # a token of this many bytes still fits
            if room >= max_token_bytes:
                _set_range_listed(bits, ids, nodes[i, 3], nodes[end, 3], touched)
            else:  # a node's depth is the byte length of the tokens ending there
                for j in range(i, end):
                    if nodes[j, 1] <= room:
                        _set_range_listed(bits, ids, nodes[j, 3], nodes[j + 1, 3], touched)
            i = end
            continue
        nq = trans[q, b]
        if nq >= 0 and flags[q, b] == 0:  # the common case: a plain transition, stack untouched
            lv[d, L_Q] = nq
            lv[d, L_TOP] = lv[d - 1, L_TOP]
            lv[d, L_AT] = lv[d - 1, L_AT]
            lv[d, L_DEP] = lv[d - 1, L_DEP]
            lv[d, L_CNT] = lv[d - 1, L_CNT]
            lv[d, L_CLS] = 1 if in_class else 0
            _set_range_listed(bits, ids, nodes[i, 3], nodes[i + 1, 3], touched)
            i += 1
            continue
        if nq < 0 and info[q, S_CALL] < 0 and info[q, S_FINAL] == 0:  # the other common case: a dead byte
            i = nodes[i, 2]
            continue
        counted_class = in_class and nq >= 0 and flags[q, b] == INC  # as in token_mask._walk
        q, top, at, dep, cnt, low, ok = _step(trans, flags, info, b, q, lv[d - 1, L_TOP], lv[d - 1, L_AT],
                                              lv[d - 1, L_DEP], lv[d - 1, L_CNT], arena, max_depth)
        if low == -1:
            read = max(read, stack_len + 1)
        elif low >= 0 and low < stack_len:
            read = max(read, stack_len - low)
        if not ok:
            i = nodes[i, 2]
            continue
        lv[d, L_Q] = q
        lv[d, L_TOP] = top
        lv[d, L_AT] = at
        lv[d, L_DEP] = dep
        lv[d, L_CNT] = cnt
        lv[d, L_CLS] = 1 if counted_class else 0
        _set_range_listed(bits, ids, nodes[i, 3], nodes[i + 1, 3], touched)
        i += 1
    return read


@njit(cache=True, nogil=True)
def _literal_states(trans, flags, info, state_groups, counted, out, out_byte):
    n = 0
    for q in range(trans.shape[0]):
        if info[q, S_CALL] >= 0 or info[q, S_FINAL] != 0 or info[q, S_PLAIN] != 0 or counted[q]:
            continue
        if state_groups[q, 0] != 0 or state_groups[q, 1] != 0:
            continue
        ways = 0
        ok = True
        byte = 0
        for b in range(256):
            nq = trans[q, b]
            if nq >= 0:
                ways += 1
                byte = b
                if ways > 1 or flags[q, b] != 0 or nq == q:
                    ok = False
                    break
        if ok and ways == 1:
            out[n] = q
            out_byte[n] = byte
            n += 1
    return n


def literal_states(prepared: tuple, counted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(states, bytes), int32: the states with one byte out (a flag-free transition to another state), no call, not accepting,
    not a string body, no counter (``counted``), no accept groups and no class shortcut (``prepared`` from
    :func:`prepare_fill_arguments`): the characters of a literal key or of punctuation, whose masks are a few
    tokens. A few microseconds per grammar."""
    trans, flags, info, state_groups = prepared[6], prepared[7], prepared[8], prepared[9]
    out = np.empty((2, trans.shape[0]), dtype=np.int32)
    n = _literal_states(trans, flags, info, state_groups, counted, out[0], out[1])
    return out[0, :n], out[1, :n]


@njit(cache=True, nogil=True)
def _fill_sparse(nodes, ids, sub, root_children, max_token_bytes, group_bits, trans, flags, info, state_groups,
                 states, state_bytes, next_bytes, second, max_depth, arena, lv, bits, touched, words, values, ends,
                 reads):
    """The masks of the literal ``states`` (see :func:`literal_states`; ``state_bytes``: each one's byte) from
    the start configuration (empty stack, counter 0), written sparse.

    As ``token_mask._fill`` there: the only first byte such a state takes is its own (the root loop would skip every
    other), and no class shortcut applies. Where the next state is literal too (``next_bytes[k]``: its byte,
    else -1), the walk starts at the second byte's node (``second[b1, b2]``, the full trie's depth-2 node of
    those bytes, or -1): the first byte's other children are dead bytes the walk would skip one by one. State ``k`` gets the words ``words[ends[k - 1]:ends[k]]`` (0 for
    k = 0) with their values (its mask's non-zero words, in no order) and its stack read depth ``reads[k]``,
    or -1 if its walk pushed onto the stack (then the mask may depend on the stack's depth through
    ``max_depth``). ``bits``: an all-zero uint32 scratch of the mask's width, left all zero; ``touched``:
    int32 scratch, one entry more than ``bits``. Returns how many states were filled: all, or fewer when
    ``words`` is full.
    """
    n = 0
    for k in range(states.shape[0]):
        q = states[k]
        touched[0] = 0
        arena[0, 0] = -7  # a push writes here
        read = 0
        b1 = state_bytes[k]
        c = root_children[0, b1]
        b2 = next_bytes[k]
        if c >= 0:
            level, start, node = 0, q, c  # walk the first byte's subtree from the state itself
            if b2 >= 0:  # the first byte's own tokens, then on from the second byte's node
                _set_range_listed(bits, ids, nodes[c, 3], nodes[c + 1, 3], touched)
                level, start, node = 1, trans[q, b1], second[b1, b2]
            if node >= 0:
                lv[level, L_Q] = start
                lv[level, L_TOP] = -1
                lv[level, L_AT] = 0
                lv[level, L_DEP] = 0
                lv[level, L_CNT] = 0
                lv[level, L_CLS] = 0
                read = _walk_sparse(nodes, ids, sub, node, nodes[node, 2], trans, flags, info, state_groups,
                                    max_token_bytes, group_bits[256], 0, max_depth, arena, lv, bits, state_groups[q, 1],
                                    state_groups[q, 2], group_bits, 0, touched)
        m = touched[0]
        fits = n + m <= words.shape[0]
        for t in range(1, m + 1):
            w = touched[t]
            if fits:
                words[n] = w
                values[n] = bits[w]
                n += 1
            bits[w] = 0
        if not fits:
            return k
        ends[k] = n
        reads[k] = read if arena[0, 0] == -7 else -1
    return states.shape[0]


def fill_masks_sparse(prepared: tuple, states: np.ndarray, state_bytes: np.ndarray, next_bytes: np.ndarray,
                      second: np.ndarray, max_depth: int, scratch: tuple, bits: np.ndarray, touched: np.ndarray,
                      words: np.ndarray, values: np.ndarray, ends: np.ndarray, reads: np.ndarray) -> int:
    """The masks of the literal ``states`` (int32, with ``state_bytes`` from :func:`literal_states`;
    ``next_bytes``: the next state's byte where it is literal too, else -1; ``second``: the full trie's depth-2
    node per two bytes, int32 [256, 256]) from the start configuration, each as
    ``fill_next_token_bitmask_prepared`` would fill it, written sparse: state ``k``'s non-zero words and their
    values at ``words``/``values[ends[k - 1]:ends[k]]``, its read depth in ``reads[k]`` (-1: its walk pushed).
    ``prepared`` from ``prepare_fill_arguments``; ``scratch`` from ``allocate_scratch``; ``bits``: an all-zero
    uint32 bitmask, left all zero; ``touched``: int32 with one entry more. Returns how many states fit."""
    arena, levels = scratch
    return int(_fill_sparse(*prepared, states, state_bytes, next_bytes, second, max_depth, arena, levels, bits,
                            touched, words, values, ends, reads))
