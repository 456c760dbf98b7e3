"""Token bitmask kernels: the only numba code in realizar-ort.

Field vocabulary (as in outlines-core, xgrammar, llguidance): a bitmask is ``int32[ceil(vocab / 32)]``,
bit ``i % 32`` of word ``i // 32`` set = token ``i`` allowed.

- :func:`allocate_token_bitmask` / :func:`apply_token_bitmask_inplace` (+ the batch variant): plain
  helpers any grammar can use.
- :func:`fill_next_token_bitmask`: walks a byte trie of the vocabulary with a byte-level pushdown
  automaton (``realizar_ort.json_schema.Automaton``) from a configuration (state, string counter, stack)
  and sets the bit of every token whose bytes the automaton accepts as a continuation. A subtree is
  skipped as soon as its prefix is rejected. States that loop on every plain string character take a
  shortcut: the precomputed "plain tokens of at most k characters" row is OR-ed in and only the other
  tokens are walked.
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
    "fill_next_token_bitmask_reference",
]

INC, CLOSE, RESET, ROOM = 1, 2, 4, 8
# the plain ASCII string characters (0x20-0x7F but '"' and '\\') as a 256-bit set, words 0-1 (2-3 are zero)
_PLAIN_ASCII = np.zeros(4, dtype=np.uint64)
for _b in [*range(0x20, 0x22), *range(0x23, 0x5C), *range(0x5D, 0x80)]:
    _PLAIN_ASCII[_b >> 6] |= np.uint64(1) << np.uint64(_b & 63)
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
@njit(cache=True, nogil=True, inline="always")
def _step(trans, flags, final, call_start, call_ret, cmin, cmax, b, q, top, at, depth, cnt,
          arena_ret, arena_par, max_depth):
    """Consume byte ``b``. Returns (q, top, at, depth, cnt, popped_committed_index or -2, ok)."""
    lowest = -2
    for _ in range(MAX_STEPS_PER_BYTE):
        nq = trans[q, b]
        if nq >= 0:
            f = flags[q, b]
            if f & RESET:
                cnt = 0
            if f & INC:
                if cnt >= cmax[q]:
                    return q, top, at, depth, cnt, lowest, False
                cnt += 1
            if f & CLOSE and cnt < cmin[q]:
                return q, top, at, depth, cnt, lowest, False
            if f & ROOM and cnt >= cmax[q]:
                return q, top, at, depth, cnt, lowest, False
            return nq, top, at, depth, cnt, lowest, True
        cs = call_start[q]
        if cs >= 0 and trans[cs, b] >= 0:
            if depth >= max_depth or at >= arena_ret.shape[0]:
                return q, top, at, depth, cnt, lowest, False
            arena_ret[at] = call_ret[q]
            arena_par[at] = top
            top = at
            at += 1
            depth += 1
            q = cs
            continue
        if final[q]:
            if top < 0:
                lowest = -1
                return q, top, at, depth, cnt, lowest, False
            lowest = top
            q = arena_ret[top]
            top = arena_par[top]
            depth -= 1
            continue
        return q, top, at, depth, cnt, lowest, False
    return q, top, at, depth, cnt, lowest, False


@njit(cache=True, nogil=True)
def _walk(t_byte, t_skip, t_depth, t_ptr, t_ids, t_sub, trans, flags, final, call_start, call_ret, cmin, cmax,
          loop_bits, plain_loop, tok_len, q0, cnt0, stack_len, max_depth, arena_ret, arena_par, cq, ctop, cat, cdep, ccnt, bits):
    """Set bits of every token in the trie accepted from the configuration; returns stack read depth.

    Shortcuts: if every byte in node i's subtree is a plain self-loop of the current state, all of the
    subtree's tokens are accepted without walking it; in a string state (``plain_loop``, maybe length
    bounded) a subtree of plain ASCII bytes is accepted token by token from its length alone.
    """
    cq[0] = q0
    ctop[0] = stack_len - 1
    cat[0] = stack_len
    cdep[0] = stack_len
    ccnt[0] = cnt0
    read = 0
    n = t_byte.shape[0]
    i = 1
    while i < n:
        d = t_depth[i]
        q = cq[d - 1]
        if loop_bits[q, 4] != 0 and (t_sub[i, 0] & ~loop_bits[q, 0]) == 0 and (t_sub[i, 1] & ~loop_bits[q, 1]) == 0 \
                and (t_sub[i, 2] & ~loop_bits[q, 2]) == 0 and (t_sub[i, 3] & ~loop_bits[q, 3]) == 0:
            end = t_skip[i]
            for k in range(t_ptr[i], t_ptr[end]):
                tid = t_ids[k]
                bits[tid >> 5] |= np.uint32(1) << np.uint32(tid & 31)
            i = end
            continue
        if plain_loop[q] and (t_sub[i, 0] & ~_PLAIN_ASCII[0]) == 0 and (t_sub[i, 1] & ~_PLAIN_ASCII[1]) == 0 \
                and t_sub[i, 2] == 0 and t_sub[i, 3] == 0:
            end = t_skip[i]
            room = cmax[q] - ccnt[d - 1] + d - 1  # a token of this many bytes still fits
            for k in range(t_ptr[i], t_ptr[end]):
                tid = t_ids[k]
                if tok_len[tid] <= room:
                    bits[tid >> 5] |= np.uint32(1) << np.uint32(tid & 31)
            i = end
            continue
        b = t_byte[i]
        nq = trans[q, b]
        if nq >= 0 and flags[q, b] == 0:  # the common case: a plain transition, stack untouched
            cq[d] = nq
            ctop[d] = ctop[d - 1]
            cat[d] = cat[d - 1]
            cdep[d] = cdep[d - 1]
            ccnt[d] = ccnt[d - 1]
            for k in range(t_ptr[i], t_ptr[i + 1]):
                tid = t_ids[k]
                bits[tid >> 5] |= np.uint32(1) << np.uint32(tid & 31)
            i += 1
            continue
        if nq < 0 and call_start[q] < 0 and not final[q]:  # the other common case: a dead byte
            i = t_skip[i]
            continue
        q, top, at, dep, cnt, low, ok = _step(
            trans, flags, final, call_start, call_ret, cmin, cmax, b, q, ctop[d - 1],
            cat[d - 1], cdep[d - 1], ccnt[d - 1], arena_ret, arena_par, max_depth)
        if low == -1:
            read = max(read, stack_len + 1)
        elif low >= 0 and low < stack_len:
            read = max(read, stack_len - low)
        if not ok:
            i = t_skip[i]
            continue
        cq[d] = q
        ctop[d] = top
        cat[d] = at
        cdep[d] = dep
        ccnt[d] = cnt
        for k in range(t_ptr[i], t_ptr[i + 1]):
            tid = t_ids[k]
            bits[tid >> 5] |= np.uint32(1) << np.uint32(tid & 31)
        i += 1
    return read


@njit(cache=True, nogil=True)
def _fill(a_byte, a_skip, a_depth, a_ptr, a_ids, a_sub, r_byte, r_skip, r_depth, r_ptr, r_ids, r_sub, plain_upto,
          c_byte, c_skip, c_depth, c_ptr, c_ids, c_sub, open_upto, tok_len,
          trans, flags, final, call_start, call_ret, cmin, cmax, plain_loop, loop_bits, free_string,
          q, cnt, stack, stack_len, max_depth, arena_ret, arena_par, cq, ctop, cat, cdep, ccnt, bits,
          include_plain):
    for j in range(stack_len):
        arena_ret[j] = stack[j]
        arena_par[j] = j - 1
    bits[:] = 0
    if plain_loop[q]:
        room = cmax[q] - cnt
        if include_plain:
            row = plain_upto[max(0, min(room, plain_upto.shape[0] - 1))].view(np.uint32)
            for w in range(bits.shape[0]):
                bits[w] = row[w]
            if free_string[q]:
                row = open_upto[max(0, min(room, open_upto.shape[0] - 1))].view(np.uint32)
                for w in range(bits.shape[0]):
                    bits[w] |= row[w]
        if free_string[q]:  # tokens staying inside are in open_upto: walk only those with a closing quote
            return _walk(c_byte, c_skip, c_depth, c_ptr, c_ids, c_sub, trans, flags, final, call_start, call_ret,
                         cmin, cmax, loop_bits, plain_loop, tok_len, q, cnt, stack_len, max_depth, arena_ret,
                         arena_par, cq, ctop, cat, cdep, ccnt, bits)
        return _walk(r_byte, r_skip, r_depth, r_ptr, r_ids, r_sub, trans, flags, final, call_start, call_ret,
                     cmin, cmax, loop_bits, plain_loop, tok_len, q, cnt, stack_len, max_depth, arena_ret,
                     arena_par, cq, ctop, cat, cdep, ccnt, bits)
    return _walk(a_byte, a_skip, a_depth, a_ptr, a_ids, a_sub, trans, flags, final, call_start, call_ret,
                 cmin, cmax, loop_bits, plain_loop, tok_len, q, cnt, stack_len, max_depth, arena_ret,
                 arena_par, cq, ctop, cat, cdep, ccnt, bits)


def fill_next_token_bitmask(vocab_arrays: tuple, automaton_arrays: tuple, state: int, counter: int,
                            stack: np.ndarray, stack_len: int, max_depth: int, scratch: tuple,
                            bitmask: np.ndarray, include_plain: bool = True) -> int:
    """Fill ``bitmask`` (cleared first) with the tokens allowed from (state, counter, stack[:stack_len]).

    ``vocab_arrays``: full trie (6 arrays), rest trie (6), ``plain_upto``, close trie (6), ``open_upto``,
    token byte lengths (int32).
    ``automaton_arrays``: trans, flags, final, call_start, call_ret, cmin, cmax, plain_loop, loop_bits
    (``uint64 [states, 5]``: the 256-bit set of bytes that loop on the state without flags, and a
    nonzero word 4 when that set is not empty), free_string.
    ``scratch``: (arena_ret, arena_par, cq, ctop, cat, cdep, ccnt) from :func:`allocate_scratch`.
    Returns how many stack entries (from the top) the result depended on (``stack_len + 1`` if it
    depended on the stack being exactly this deep). Stop tokens are not touched: the caller sets them.
    ``include_plain=False``: in a plain-loop (string) state, leave out the plain-token rows (the caller ORs
    ``plain_upto[min(room, last)]`` and, in a free string, ``open_upto[...]`` itself, so the walk result
    can be cached across string lengths).
    """
    if bitmask.dtype != np.int32 or bitmask.ndim != 1:
        raise ValueError(f"bitmask must be a 1-D int32 array, got {bitmask.dtype} {bitmask.shape}")
    if not 0 <= state < automaton_arrays[0].shape[0]:
        raise ValueError(f"state {state} out of range [0, {automaton_arrays[0].shape[0]})")
    if stack_len > stack.shape[0] or stack_len + 1 > scratch[0].shape[0]:
        raise ValueError(f"stack_len {stack_len} exceeds the stack or scratch capacity")
    return int(_fill(*vocab_arrays, *automaton_arrays, state, counter, stack, stack_len, max_depth, *scratch,
                     bitmask.view(np.uint32), include_plain))


def allocate_scratch(max_depth: int, max_token_bytes: int) -> tuple[np.ndarray, ...]:
    """Per-matcher scratch for :func:`fill_next_token_bitmask` (a few KB)."""
    arena = max_depth + max_token_bytes + 2
    levels = max_token_bytes + 2
    return (np.zeros(arena, np.int32), np.zeros(arena, np.int32), np.zeros(levels, np.int32),
            np.zeros(levels, np.int32), np.zeros(levels, np.int32), np.zeros(levels, np.int32),
            np.zeros(levels, np.int32))


@njit(cache=True, nogil=True)
def _advance(trans, flags, final, call_start, call_ret, cmin, cmax, data, q, cnt, stack, stack_len, max_depth,
             arena_ret, arena_par):
    # the committed stack is a chain in the arena; pushes append, pops follow parents
    for j in range(stack_len):
        arena_ret[j] = stack[j]
        arena_par[j] = j - 1
    top = stack_len - 1
    at = stack_len
    dep = stack_len
    for i in range(data.shape[0]):
        q, top, at, dep, cnt, _low, ok = _step(trans, flags, final, call_start, call_ret, cmin, cmax, data[i], q,
                                              top, at, dep, cnt, arena_ret, arena_par, max_depth)
        if not ok:
            return -1, cnt, stack_len
    # write the resulting chain back as a flat stack
    n = dep
    node = top
    for j in range(n - 1, -1, -1):
        stack[j] = arena_ret[node]
        node = arena_par[node]
    return q, cnt, n


def advance_token_bytes(automaton_arrays: tuple, data: np.ndarray, state: int, counter: int, stack: np.ndarray,
                        stack_len: int, max_depth: int, scratch: tuple) -> tuple[int, int, int]:
    """Consume ``data`` (uint8) from the configuration; updates ``stack`` in place.

    Returns (state, counter, stack_len); state -1 means rejected (stack then unchanged).
    """
    if stack.shape[0] < max_depth:
        raise ValueError(f"stack capacity {stack.shape[0]} < max_depth {max_depth}")
    q, cnt, n = _advance(*automaton_arrays[:7], data, state, counter, stack, stack_len, max_depth,
                         scratch[0], scratch[1])
    return int(q), int(cnt), int(n)


# ------------------------------------------------------------------------------------ references
def _step_reference(a, b, q, stack, cnt, max_depth):
    trans, flags, final, call_start, call_ret, cmin, cmax = a[:7]
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
    """Pure-Python :func:`advance_token_bytes`: None if rejected, else (state, counter, new stack)."""
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
    allowed = np.zeros(bitmask.shape[0] * 32, dtype=bool)
    for tid, raw in enumerate(token_bytes):
        if tid >= allowed.shape[0] or not raw:
            continue
        if advance_token_bytes_reference(automaton_arrays, raw, state, counter, stack, max_depth) is not None:
            allowed[tid] = True
    bitmask[:] = np.packbits(allowed, bitorder="little").view(np.int32)[: bitmask.shape[0]]
