"""Token bitmask kernels: the only numba code in realizar-ort.

Field vocabulary (as in outlines-core, xgrammar, llguidance): a bitmask is ``int32[ceil(vocab / 32)]``,
bit ``i % 32`` of word ``i // 32`` set = token ``i`` allowed.

- :func:`allocate_token_bitmask` / :func:`apply_token_bitmask_inplace` (+ the batch variant): plain
  helpers any grammar can use.
- :func:`fill_next_token_bitmask`: walks a byte trie of the vocabulary with a byte-level pushdown
  automaton (``realizar_ort.grammar.json_schema.Automaton``) from a configuration (state, string counter, stack)
  and sets the bit of every token whose bytes the automaton accepts as a continuation. A subtree is
  skipped as soon as its prefix is rejected, and a first byte the state cannot take is never read
  (a table of first-byte nodes). Shortcuts: states that loop on every plain string character OR in the
  precomputed "plain tokens of at most k characters" row and walk only the other tokens; under a
  character class (``[A-Za-z0-9._%+-]+``, ``[A-Z]{3}``) the class's token row
  (:mod:`realizar_ort.kernels.token_classes`) is OR-ed in by the caller and only subtrees holding a byte
  that can leave the class are walked. In a string body whose plain bytes cannot matter (``S_SUFFIX``) the
  string tokens are walked keyed by what follows their leading plain bytes (tries 3 and 4, about half the
  nodes of tries 1 and 2). Subtree byte sets are kept as 64 byte groups
  (``realizar_ort.grammar.vocab.BYTE_GROUP``), exact for plain string text and the usual classes.
- ``fill_next_token_bitmask_from_reference``: the walk of a state that behaves like another one after all but a
  few first bytes: that state's mask, with only those first bytes' subtrees cleared and walked.
- :func:`advance_token_bytes`: run one token's bytes through the automaton, updating the stack in place.
- ``*_reference``: plain Python/numpy versions the tests compare the kernels against.

All kernels are ``@njit(cache=True, nogil=True)``: they release the GIL, so different sequences' masks can
be filled from different threads. Each call uses only the scratch arrays it is given.
"""

from __future__ import annotations

import numpy as np

try:
    from numba import njit
except ImportError as exc:  # pragma: no cover - numba is a hard dependency
    raise ImportError("realizar_ort.kernels needs numba: pip install 'numba>=0.60'") from exc

__all__ = [
    "MAX_STEPS_PER_BYTE",
    "advance_token_bytes",
    "advance_token_bytes_reference",
    "allocate_scratch",
    "allocate_token_bitmask",
    "apply_token_bitmask_inplace",
    "apply_token_bitmask_inplace_batch",
    "apply_token_bitmask_inplace_reference",
    "fill_next_token_bitmask",
    "fill_next_token_bitmask_from_reference",
    "fill_next_token_bitmask_prepared",
    "fill_next_token_bitmask_reference",
    "prepare_fill_arguments",
]

INC, CLOSE, RESET, ROOM = 1, 2, 4, 8
MAX_STEPS_PER_BYTE = 64  # pops/calls allowed while consuming one byte


def allocate_token_bitmask(vocab_size: int) -> np.ndarray:
    """A zeroed ``int32[ceil(vocab_size / 32)]`` bitmask."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.zeros((vocab_size + 31) // 32, dtype=np.int32)


# ---------------------------------------------------------------------------------------- apply
@njit(cache=True, nogil=True)
def _apply_token_bitmask_kernel(logits, bitmask):
    bits = bitmask.view(np.uint32)
    n = logits.shape[0]
    n_words = min(bits.shape[0], (n + 31) // 32)
    neg = np.float32(-np.inf)
    w = 0
    while w < n_words:
        word = bits[w]
        if word == np.uint32(0):  # the common case under a grammar: a run of fully masked words
            start = w
            while w < n_words and bits[w] == np.uint32(0):
                w += 1
            logits[start * 32:min(w * 32, n)] = neg
            continue
        if word != np.uint32(0xFFFFFFFF):
            base = w * 32
            for i in range(base, min(base + 32, n)):
                if (word >> np.uint32(i - base)) & np.uint32(1) == 0:
                    logits[i] = neg
        w += 1


def _check_bitmask(bitmask: np.ndarray, vocab: int, ndim: int) -> None:
    if not isinstance(bitmask, np.ndarray) or bitmask.dtype != np.int32:
        raise TypeError(f"bitmask must be an int32 numpy array, got {getattr(bitmask, 'dtype', type(bitmask))}")
    if bitmask.ndim != ndim:
        raise ValueError(f"bitmask must be {ndim}-D, got shape {bitmask.shape}")
    if bitmask.shape[-1] < (vocab + 31) // 32:
        raise ValueError(f"bitmask has {bitmask.shape[-1]} words, needs {(vocab + 31) // 32} for {vocab} logits")
    if not bitmask.flags.c_contiguous:
        raise ValueError("bitmask must be C-contiguous")


def apply_token_bitmask_inplace(logits: np.ndarray, bitmask: np.ndarray) -> None:
    """Set ``logits[i] = -inf`` wherever bit ``i`` is clear. ``logits``: float32 ``[vocab]``, writable."""
    if not isinstance(logits, np.ndarray) or logits.dtype != np.float32:
        raise TypeError(f"logits must be a float32 numpy array, got {getattr(logits, 'dtype', type(logits))}")
    if logits.ndim != 1:
        raise ValueError(f"logits must be 1-D, got shape {logits.shape}")
    _check_bitmask(bitmask, logits.shape[0], 1)
    _apply_token_bitmask_kernel(logits, bitmask)


def apply_token_bitmask_inplace_batch(logits: np.ndarray, bitmask: np.ndarray,
                                      indices: np.ndarray | None = None) -> None:
    """Batch variant: ``logits`` ``[batch, vocab]``, ``bitmask`` ``[batch, words]``; only rows in
    ``indices`` (default: all) are masked."""
    if not isinstance(logits, np.ndarray) or logits.dtype != np.float32:
        raise TypeError(f"logits must be a float32 numpy array, got {getattr(logits, 'dtype', type(logits))}")
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D [batch, vocab], got shape {logits.shape}")
    _check_bitmask(bitmask, logits.shape[1], 2)
    if bitmask.shape[0] != logits.shape[0]:
        raise ValueError(f"bitmask batch {bitmask.shape[0]} != logits batch {logits.shape[0]}")
    rows = range(logits.shape[0]) if indices is None else [int(i) for i in indices]
    for r in rows:
        if not 0 <= r < logits.shape[0]:
            raise ValueError(f"index {r} out of range for batch {logits.shape[0]}")
        _apply_token_bitmask_kernel(logits[r], bitmask[r])


def apply_token_bitmask_inplace_reference(logits: np.ndarray, bitmask: np.ndarray) -> None:
    bits = np.unpackbits(bitmask.view(np.uint8), bitorder="little")[: logits.shape[-1]]
    logits[..., bits == 0] = -np.inf


# ----------------------------------------------------------------------------------------- step
# columns of the per-state table ``state_info`` (int32 [states, 8])
S_FINAL, S_CALL, S_RET, S_CMIN, S_CMAX, S_PLAIN, S_FREE, S_SUFFIX = 0, 1, 2, 3, 4, 5, 6, 7
# columns of the per-depth scratch ``levels`` (int32 [max_token_bytes + 2, 6])
L_Q, L_TOP, L_AT, L_DEP, L_CNT, L_CLS = 0, 1, 2, 3, 4, 5


@njit(cache=True, nogil=True, inline="always")
def _step(trans, flags, info, b, q, top, at, depth, cnt, arena, max_depth):
    """Consume byte ``b``. Returns (q, top, at, depth, cnt, popped_committed_index or -2, ok).

    ``arena[k] = (return state, parent index)``: the stack as a chain, so a walk can branch without copying.
    """
    lowest = -2
    for _ in range(MAX_STEPS_PER_BYTE):
        nq = trans[q, b]
        if nq >= 0:
            f = flags[q, b]
            if f & RESET:
                cnt = 0
            if f & INC:
                if cnt >= info[q, S_CMAX]:
                    return q, top, at, depth, cnt, lowest, False
                cnt += 1
            if f & CLOSE and cnt < info[q, S_CMIN]:
                return q, top, at, depth, cnt, lowest, False
            if f & ROOM and cnt >= info[q, S_CMAX]:
                return q, top, at, depth, cnt, lowest, False
            return nq, top, at, depth, cnt, lowest, True
        cs = info[q, S_CALL]
        if cs >= 0 and trans[cs, b] >= 0:
            if depth >= max_depth or at >= arena.shape[0]:
                return q, top, at, depth, cnt, lowest, False
            arena[at, 0] = info[q, S_RET]
            arena[at, 1] = top
            top = at
            at += 1
            depth += 1
            q = cs
            continue
        if info[q, S_FINAL]:
            if top < 0:
                lowest = -1
                return q, top, at, depth, cnt, lowest, False
            lowest = top
            q = arena[top, 0]
            top = arena[top, 1]
            depth -= 1
            continue
        return q, top, at, depth, cnt, lowest, False
    return q, top, at, depth, cnt, lowest, False


@njit(cache=True, nogil=True, inline="always")
def _set_range(bits, ids, lo, hi):
    for k in range(lo, hi):
        tid = ids[k]
        bits[tid >> 5] |= np.uint32(1) << np.uint32(tid & 31)


@njit(cache=True, nogil=True, inline="always")
def _walk(nodes, ids, sub, first, last, trans, flags, info, state_groups, max_token_bytes, plain_groups, stack_len,
          max_depth, arena, lv, bits, class_groups, class_exit, group_bit, read):
    """Walk nodes ``[first, last)`` (one first-byte subtree) from the configuration in ``lv[0]``.

    Sets the bits of accepted tokens; returns the stack read depth (max with ``read``). Shortcuts: a
    subtree whose bytes all lie in the current state's accept groups (``state_groups[q, 0]``) is accepted whole; in a string state a subtree
    of plain ASCII is accepted token by token from its length; under a character class ``class_groups``
    (whose token row the caller ORs in) a subtree below a class-only prefix with no byte of the groups
    ``class_exit`` (every byte that could leave the class on the way) is skipped.
    """
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
            _set_range(bits, ids, nodes[i, 3], nodes[end, 3])
            i = end
            continue
        sp = info[q, S_PLAIN]
        if sp != 0 and (sg & ~plain_groups) == 0 and (sp == 1 or (sg & state_groups[q, 3]) == 0):
            end = nodes[i, 2]
            room = info[q, S_CMAX] - lv[d - 1, L_CNT] + d - 1  # a token of this many bytes still fits
            if room >= max_token_bytes:
                _set_range(bits, ids, nodes[i, 3], nodes[end, 3])
            else:  # a node's depth is the byte length of the tokens ending there
                for j in range(i, end):
                    if nodes[j, 1] <= room:
                        _set_range(bits, ids, nodes[j, 3], nodes[j + 1, 3])
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
            _set_range(bits, ids, nodes[i, 3], nodes[i + 1, 3])
            i += 1
            continue
        if nq < 0 and info[q, S_CALL] < 0 and info[q, S_FINAL] == 0:  # the other common case: a dead byte
            i = nodes[i, 2]
            continue
        # a class byte counted by a length-bounded class (its row is bounded by the room left): still in the class
        counted_class = in_class and nq >= 0 and flags[q, b] == INC
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
        _set_range(bits, ids, nodes[i, 3], nodes[i + 1, 3])
        i += 1
    return read


@njit(cache=True, nogil=True)
def _fill(nodes, ids, sub, root_children, max_token_bytes, group_bits, trans, flags, info, state_groups, q, cnt, stack,
          stack_len, max_depth, arena, lv, bits):
    # few arguments on purpose: each costs ~45 ns of dispatch per call
    class_groups = state_groups[q, 1]
    for j in range(stack_len):
        arena[j, 0] = stack[j]
        arena[j, 1] = j - 1
    bits[:] = 0
    tree = 0  # the full trie
    if info[q, S_PLAIN] != 0:
        # tokens staying inside a free string are in free_upto: walk only those with a closing quote
        tree = 2 if info[q, S_FREE] != 0 else 1
        # the same tokens keyed by their suffix after leading plain bytes, where those bytes cannot matter: no
        # bound can bite inside one token (the minimum is met, or so far off that no token closes the string
        # either way, and the maximum is out of reach)
        suffix = info[q, S_SUFFIX]
        cmin = info[q, S_CMIN]
        if suffix > 0 or (suffix < 0 and (cnt >= cmin or cmin - cnt >= -suffix) and info[q, S_CMAX] - cnt >= -suffix):
            tree += 2
    lv[0, L_Q] = q
    lv[0, L_TOP] = stack_len - 1
    lv[0, L_AT] = stack_len
    lv[0, L_DEP] = stack_len
    lv[0, L_CNT] = cnt
    lv[0, L_CLS] = 1 if class_groups != 0 else 0
    read = 0
    for b in range(256):
        c = root_children[tree, b]
        if c >= 0:
            read = _root_subtree(nodes, ids, sub, c, b, max_token_bytes, group_bits, trans, flags, info, state_groups,
                                 q, cnt, stack_len, max_depth, arena, lv, bits, read)
    return read


@njit(cache=True, nogil=True, inline="always")
def _root_subtree(nodes, ids, sub, c, b, max_token_bytes, group_bits, trans, flags, info, state_groups, q, cnt,
                  stack_len, max_depth, arena, lv, bits, read):
    """Walk the first-byte subtree ``c`` (first byte ``b``) from ``lv[0]``; returns the stack read depth."""
    if trans[q, b] < 0:
        callee = info[q, S_CALL]
        if info[q, S_FINAL] == 0 and (callee < 0 or trans[callee, b] < 0):
            return read  # a first byte the state cannot take: its subtree is never read
        # a call or a return: try the first byte before reading the subtree
        _q, _top, _at, _dep, _cnt, low, ok = _step(trans, flags, info, b, q, stack_len - 1, stack_len,
                                                  stack_len, cnt, arena, max_depth)
        if low == -1:
            read = max(read, stack_len + 1)
        elif low >= 0 and low < stack_len:
            read = max(read, stack_len - low)
        if not ok:
            return read
    return _walk(nodes, ids, sub, c, nodes[c, 2], trans, flags, info, state_groups, max_token_bytes, group_bits[256],
                 stack_len, max_depth, arena, lv, bits, state_groups[q, 1], state_groups[q, 2], group_bits, read)


@njit(cache=True, nogil=True)
def _fill_from_reference(nodes, ids, sub, root_children, max_token_bytes, group_bits, trans, flags, info,
                         state_groups, q, cnt, stack, stack_len, max_depth, arena, lv, bits, ref_bits, walk_bytes):
    """``bits`` = ``ref_bits`` (the mask of an equivalent-but-for-a-few-first-bytes state from the same
    configuration) with the tokens of each first byte in ``walk_bytes`` cleared and walked from ``q``."""
    for j in range(stack_len):
        arena[j, 0] = stack[j]
        arena[j, 1] = j - 1
    bits[:] = ref_bits
    lv[0, L_Q] = q
    lv[0, L_TOP] = stack_len - 1
    lv[0, L_AT] = stack_len
    lv[0, L_DEP] = stack_len
    lv[0, L_CNT] = cnt
    lv[0, L_CLS] = 0
    read = 0
    for k in range(walk_bytes.shape[0]):
        b = walk_bytes[k]
        c = root_children[0, b]
        if c < 0:
            continue
        for j in range(nodes[c, 3], nodes[nodes[c, 2], 3]):
            tid = ids[j]
            bits[tid >> 5] &= ~(np.uint32(1) << np.uint32(tid & 31))
        read = _root_subtree(nodes, ids, sub, c, b, max_token_bytes, group_bits, trans, flags, info, state_groups,
                             q, cnt, stack_len, max_depth, arena, lv, bits, read)
    return read


def fill_next_token_bitmask(vocab_arrays: tuple, automaton_arrays: tuple, state: int, counter: int,
                            stack: np.ndarray, stack_len: int, max_depth: int, scratch: tuple,
                            bitmask: np.ndarray, include_plain: bool = True, class_groups: int = 0,
                            class_exit: int = 0, excluded_tokens: np.ndarray | None = None) -> int:
    """Fill ``bitmask`` (cleared first) with the tokens allowed from (state, counter, stack[:stack_len]).

    ``vocab_arrays``: the trie forest (nodes, token_ids, sub_groups, root_children; tries 0 = all tokens,
    1 = the other tokens a string state may take, 2 = tokens closing a free string, 3 and 4 = tries 1 and 2
    keyed by what follows each token's leading plain string bytes), then ``text_upto`` and
    ``free_upto`` (row ``k``: the tokens any string state / a free string takes without a walk, needing at
    most ``k`` characters of room), the longest token's byte length, the plain-string byte groups (uint64)
    and each byte's group as a bit (uint64 [256]).
    ``automaton_arrays``: trans, flags, ``state_info`` (int32 [states, 8]: final, call start, call return,
    cmin, cmax, plain loop, free string, ``S_SUFFIX``: 1 = a string body whose plain bytes loop back with no
    flag, so tries 3/4 replace 1/2; ``-k`` = the same with only INC on them, once ``counter >= cmin`` (or
    ``cmin - counter >= k``) and ``cmax - counter >= k``, k above any string token's characters; 0 = never) and ``accept_groups`` (uint64 [states]: byte groups such that every
    string of their bytes is accepted from the state without flags or stack moves, e.g. the groups wholly
    inside its flag-free self-loop, or the class of a class loop the state leads to; 0 = none).
    ``scratch``: (arena, levels) from :func:`allocate_scratch`.
    Returns how many stack entries (from the top) the result depended on (``stack_len + 1`` if it
    depended on the stack being exactly this deep). Stop tokens are not touched: the caller sets them.
    ``include_plain=False``: in a plain-loop (string) state, leave out that row (the caller ORs
    ``text_upto[min(room, last)]`` or, in a free string, ``free_upto[...]`` itself, so the walk result
    can be cached across string lengths).
    ``class_groups``, ``class_exit`` (from :func:`.token_classes.class_loop_entries`): a character class
    ``L`` (whole byte groups) such that from ``state`` every token of ``L`` bytes only (up to a length for a
    bounded run) is accepted without flags, and the groups of every byte outside ``L`` that a state on the
    way may take.
    Subtrees below an ``L``-only prefix holding no ``class_exit`` byte are then skipped, and the caller ORs
    in the class's token row (:mod:`.token_classes`). 0 / 0: no class shortcut.
    ``excluded_tokens`` (int32 bitmask): in a string state refusing some multi-byte characters
    (``CompiledGrammar.excluded_chars``), the tokens holding one, left out of the plain row too.
    """
    if bitmask.dtype != np.int32 or bitmask.ndim != 1:
        raise ValueError(f"bitmask must be a 1-D int32 array, got {bitmask.dtype} {bitmask.shape}")
    if not 0 <= state < automaton_arrays[0].shape[0]:
        raise ValueError(f"state {state} out of range [0, {automaton_arrays[0].shape[0]})")
    if stack_len > stack.shape[0] or stack_len + 1 > scratch[0].shape[0]:
        raise ValueError(f"stack_len {stack_len} exceeds the stack or scratch capacity")
    prepared = prepare_fill_arguments(vocab_arrays, automaton_arrays)
    groups = prepared[-1].copy()
    groups[state, 1:3] = (np.uint64(class_groups), np.uint64(class_exit))
    bits = bitmask.view(np.uint32)
    read = int(_fill(*prepared[:-1], groups, state, counter, stack, stack_len, max_depth, *scratch, bits))
    info = automaton_arrays[2]
    if include_plain and info[state, S_PLAIN] != 0:
        rows = vocab_arrays[5] if info[state, S_FREE] != 0 else vocab_arrays[4]
        room = int(info[state, S_CMAX]) - counter
        row = rows[max(0, min(room, rows.shape[0] - 1))].view(np.uint32)
        if info[state, S_PLAIN] == 2:  # some plain bytes refused: not the tokens with one
            row = row & ~_tokens_with_groups(vocab_arrays, bits.shape[0], prepared[-1][state, 3])
            if excluded_tokens is not None:
                row = row & ~excluded_tokens.view(np.uint32)
        np.bitwise_or(bits, row, out=bits)
    return read


def _tokens_with_groups(vocab_arrays: tuple, words: int, groups: np.uint64) -> np.ndarray:
    """uint32 bitmask of the tokens holding a byte of the byte groups ``groups``: every trie node of such a byte
    (in any trie of the forest) heads tokens with one."""
    nodes, ids, group_bit = vocab_arrays[0], vocab_arrays[1], vocab_arrays[8]
    out = np.zeros(words, np.uint32)
    for i in np.flatnonzero((group_bit[nodes[:, 0]] & np.uint64(groups)) != 0).tolist():
        tids = ids[nodes[i, 3]:nodes[nodes[i, 2], 3]]
        np.bitwise_or.at(out, tids >> 5, np.left_shift(np.uint32(1), (tids & 31).astype(np.uint32)))
    return out


def prepare_fill_arguments(vocab_arrays: tuple, automaton_arrays: tuple,
                           class_groups: np.ndarray | None = None, class_exit: np.ndarray | None = None,
                           excluded: np.ndarray | None = None) -> tuple:
    """The leading arguments of :func:`fill_next_token_bitmask_prepared` (build once per grammar): the trie
    forest, the longest token's byte length, each byte's group bit plus the plain-string groups at index 256,
    the automaton tables, and ``state_groups`` (uint64 [states, 3]: accept groups, the class-shortcut
    ``class_groups`` and ``class_exit`` per state, 0 where none)."""
    nodes, ids, sub, root_children, _text, _free, max_token_bytes, plain_groups, group_bit = vocab_arrays
    trans, flags, info, accept_groups = automaton_arrays
    group_bits = np.append(group_bit, np.uint64(plain_groups)).astype(np.uint64)
    state_groups = np.zeros((trans.shape[0], 4), dtype=np.uint64)
    state_groups[:, 0] = accept_groups
    if class_groups is not None:
        state_groups[:, 1] = class_groups
    if class_exit is not None:
        state_groups[:, 2] = class_exit
    if excluded is not None:
        state_groups[:, 3] = excluded
    return (nodes, ids, sub, root_children, int(max_token_bytes), group_bits, trans, flags, info, state_groups)


# :func:`fill_next_token_bitmask` without the argument checks, the plain rows or a Python wrapper (~1.5 us less
# per call), for a caller that validated once: ``fill_next_token_bitmask_prepared(*prepared, state, counter,
# stack, stack_len, max_depth, arena, levels, bits)`` with ``prepared`` from :func:`prepare_fill_arguments`
# (the state's class shortcut comes from its row of ``state_groups``), ``(arena, levels)`` from
# :func:`allocate_scratch` and ``bits`` the bitmask viewed as uint32. Leaves out a string state's plain row
# (``include_plain=False``). Returns the stack read depth as :func:`fill_next_token_bitmask`.
fill_next_token_bitmask_prepared = _fill

# The walk of a state ``q`` that behaves like another state ``r`` after every first byte but a few (a property
# key's trie node vs the free string it drops into; see :mod:`realizar_ort.grammar.state_reference`):
# ``fill_next_token_bitmask_from_reference(*prepared, q, counter, stack, stack_len, max_depth, arena, levels,
# bits, ref_bits, walk_bytes)`` copies ``ref_bits`` (r's whole mask from the same configuration, stop tokens
# clear, uint32) into ``bits``, then clears the tokens of each first byte in ``walk_bytes`` (uint8) and walks
# them from ``q``. Exact when every other first byte leads ``q`` and ``r`` to equivalent configurations, and
# ``q`` has no class shortcut. Costs a 16 KB copy plus the walk of those subtrees, instead of the whole trie.
# Returns the walk's stack read depth (the caller adds r's).
fill_next_token_bitmask_from_reference = _fill_from_reference


def allocate_scratch(max_depth: int, max_token_bytes: int) -> tuple[np.ndarray, ...]:
    """Per-matcher scratch for :func:`fill_next_token_bitmask` (a few KB): the stack arena and one row of
    walk state per token byte."""
    return (np.zeros((max_depth + max_token_bytes + 2, 2), np.int32), np.zeros((max_token_bytes + 2, 6), np.int32))


@njit(cache=True, nogil=True)
def _advance(trans, flags, info, data, q, cnt, stack, stack_len, max_depth, arena):
    # the committed stack is a chain in the arena; pushes append, pops follow parents
    for j in range(stack_len):
        arena[j, 0] = stack[j]
        arena[j, 1] = j - 1
    top = stack_len - 1
    at = stack_len
    dep = stack_len
    for i in range(data.shape[0]):
        q, top, at, dep, cnt, _low, ok = _step(trans, flags, info, data[i], q, top, at, dep, cnt, arena, max_depth)
        if not ok:
            return -1, cnt, stack_len
    # write the resulting chain back as a flat stack
    n = dep
    node = top
    for j in range(n - 1, -1, -1):
        stack[j] = arena[node, 0]
        node = arena[node, 1]
    return q, cnt, n


def advance_token_bytes(automaton_arrays: tuple, data: np.ndarray, state: int, counter: int, stack: np.ndarray,
                        stack_len: int, max_depth: int, scratch: tuple) -> tuple[int, int, int]:
    """Consume ``data`` (uint8) from the configuration; updates ``stack`` in place.

    ``automaton_arrays`` as for :func:`fill_next_token_bitmask`. Returns (state, counter, stack_len);
    state -1 means rejected (stack then unchanged).
    """
    if stack.shape[0] < max_depth:
        raise ValueError(f"stack capacity {stack.shape[0]} < max_depth {max_depth}")
    q, cnt, n = _advance(automaton_arrays[0], automaton_arrays[1], automaton_arrays[2], data, state, counter,
                         stack, stack_len, max_depth, scratch[0])
    return int(q), int(cnt), int(n)


# ------------------------------------------------------------------------------------ references
def _columns(a: tuple) -> tuple:
    """(trans, flags, final, call_start, call_ret, cmin, cmax) from the kernel layout (trans, flags,
    state_info, accept_groups) or from ``Automaton.arrays`` (those seven arrays)."""
    if len(a) >= 7:
        return tuple(a[:7])
    info = a[2]
    return (a[0], a[1], info[:, S_FINAL], info[:, S_CALL], info[:, S_RET], info[:, S_CMIN], info[:, S_CMAX])


def _step_reference(a, b, q, stack, cnt, max_depth):
    trans, flags, final, call_start, call_ret, cmin, cmax = a
    for _ in range(MAX_STEPS_PER_BYTE):
        nq = int(trans[q, b])
        if nq >= 0:
            f = int(flags[q, b])
            if f & RESET:
                cnt = 0
            if f & INC:
                if cnt >= cmax[q]:
                    return None
                cnt += 1
            if f & CLOSE and cnt < cmin[q]:
                return None
            if f & ROOM and cnt >= cmax[q]:
                return None
            return nq, cnt
        cs = int(call_start[q])
        if cs >= 0 and trans[cs, b] >= 0:
            if len(stack) >= max_depth:
                return None
            stack.append(int(call_ret[q]))
            q = cs
            continue
        if final[q] and stack:
            q = stack.pop()
            continue
        return None
    return None


def advance_token_bytes_reference(automaton_arrays: tuple, data: bytes, state: int, counter: int,
                                  stack: list[int], max_depth: int) -> tuple[int, int, list[int]] | None:
    """Pure-Python :func:`advance_token_bytes`: None if rejected, else (state, counter, new stack).

    ``automaton_arrays``: the kernel layout or ``Automaton.arrays``."""
    automaton_arrays = _columns(automaton_arrays)
    stack = list(stack)
    q, cnt = state, counter
    for b in data:
        r = _step_reference(automaton_arrays, b, q, stack, cnt, max_depth)
        if r is None:
            return None
        q, cnt = r
    return q, cnt, stack


def fill_next_token_bitmask_reference(token_bytes: list[bytes | None], automaton_arrays: tuple, state: int,
                                      counter: int, stack: list[int], max_depth: int,
                                      bitmask: np.ndarray) -> None:
    """Token-by-token simulation, no trie and no shortcut: the ground truth for the kernel."""
    automaton_arrays = _columns(automaton_arrays)
    allowed = np.zeros(bitmask.shape[0] * 32, dtype=bool)
    for tid, raw in enumerate(token_bytes):
        if tid >= allowed.shape[0] or not raw:
            continue
        if advance_token_bytes_reference(automaton_arrays, raw, state, counter, stack, max_depth) is not None:
            allowed[tid] = True
    bitmask[:] = np.packbits(allowed, bitorder="little").view(np.int32)[: bitmask.shape[0]]
