"""The mask cache of a compiled grammar, and the matcher's mask fill that uses it.

A :class:`~realizar_ort.grammar.matcher.CompiledGrammar` owns one :class:`MaskCache`, shared by all its matchers;
:class:`CachedMaskFill` is the part of :class:`~realizar_ort.grammar.matcher.GrammarMatcher` that fills a bitmask
through it. Three kinds of entries, keyed by the *mask key* (automaton state, the string-length slack that can
matter, the top of the stack the mask depended on; see :meth:`MaskCache.key`):

- the walk for a key (dense, 16 KB at 128k tokens);
- the whole mask for (key, extra): the walk plus the row of "plain" string tokens that fits the room left and
  whether stop tokens are allowed. A hit costs one 16 KB copy (~1.3 us per step at 128k tokens, all Python
  included); near the end of a bounded string the row changes at each character, so those steps OR one row
  into the cached walk (~2.5 us);
- sparse masks of *literal* states (one plain byte out, no call, not accepting, no counter or class: the
  characters of a key, punctuation), all computed when the grammar is built in one kernel call
  (``fill_masks_sparse``, ~0.1 ms with the Python for the 168 of a 3-function tool call) where they depend on
  neither the stack nor the counter; a step there clears the bitmask and writes a few words (~1.3 us, no miss).

Generic JSON grammars (``any_json``/``any_object``) start with the dense entries their vocabulary computed at
load (:func:`seed_generic_masks`, ~15 ms and ~5 MB per vocabulary at 128k tokens), so a request's first
generic JSON masks are hits.

A miss elsewhere runs the numba trie walk (:mod:`realizar_ort.kernels.token_mask`, ~2-30 us). String states
that no run of allowed plain characters can kill (an unanchored pattern's states, negated or broad classes, a
property key's trie node in an object that allows extra keys; :mod:`realizar_ort.kernels.plain_closure`) are
string states to the kernel: a plain-token row (less the tokens of the byte groups they refuse, ``free`` 2
below) plus a walk of the rest trie, instead of the whole 128k-token trie (2-4 ms before). Another state that
takes almost every first byte the way a cheap state does has a *reference state* (:mod:`.state_reference`,
found on its first miss): its walk copies that state's whole mask (cached) and walks only the first bytes where
the two differ. Bounded:
``MASK_CACHE_ENTRIES`` dense entries per grammar (16 KB each at 128k, up to 8 MB), first come. The
dictionaries are shared by matchers in different threads (plain dict get/set); each matcher has its own
scratch, so a matcher is not thread-safe but different matchers of one grammar may run in different threads
(the kernels release the GIL).
"""

from __future__ import annotations

import numpy as np

from ..kernels.literal_masks import fill_masks_sparse, literal_states
from ..kernels.token_mask import (
    S_PLAIN,
    allocate_scratch,
    fill_next_token_bitmask_from_reference,
    fill_next_token_bitmask_prepared,
)
from .state_reference import reference_state

__all__ = ["MASK_CACHE_ENTRIES", "CachedMaskFill", "MaskCache", "same_automaton", "seed_generic_masks"]

MASK_CACHE_ENTRIES = 512  # dense, per grammar; 16 KB each at 128k vocab (8 MB)
_UNSET = object()
SPARSE_WORDS = 1 << 16  # non-zero mask words of all literal states of a grammar, at most (the rest: dense path)
_INT32 = np.dtype(np.int32)


class MaskCache:
    """Per-grammar mask cache and the per-state facts its hit path reads (as Python lists, no numpy scalars).

    ``automaton``: the grammar's :class:`~realizar_ort.grammar.json_schema.Automaton`; ``class_groups``/``class_len``:
    the character-class shortcut per state; ``slack_cap``: per state, the string-length slack beyond which a
    walk cannot change; ``kernel_args``: from ``prepare_fill_arguments``. Costs ~20 us per 300 states to build.
    """

    def __init__(self, automaton, vocab, class_groups: np.ndarray, class_len: np.ndarray,
                 slack_cap: np.ndarray, kernel_args: tuple, max_depth: int,
                 excluded_chars: dict[int, tuple[bytes, ...]] | None = None) -> None:
        self.vocab = vocab
        self.kernel_args = kernel_args
        self.max_depth = max_depth
        # From this stack length on, one token's pushes can reach max_depth, where the walk refuses them: a
        # mask there depends on the stack length, which no key holds, so it is computed fresh and not kept.
        # Below it no walk meets the limit, so masks kept there are right at any length below it.
        self.deep_stack = max_depth - vocab.max_pushes_per_token
        self.words = (vocab.vocab_size + 31) // 32
        plain_kind = kernel_args[8][:, S_PLAIN]
        self.free = np.where(plain_kind == 2, 2, automaton.free_string.astype(np.int64)).tolist()
        self.class_groups = class_groups.tolist()
        self.class_len = class_len.tolist()
        self.final = automaton.final.tolist()
        self.plain = (plain_kind != 0).tolist()  # as the kernel sees them (see CompiledGrammar)
        self.counted = automaton.counted.tolist()
        self.cmin = automaton.cmin.tolist()
        self.cmax = automaton.cmax.tolist()
        self.cap = slack_cap.tolist()
        self.longest_token = int(vocab.tables.max_token_bytes)
        self.row_tables = (vocab.text_upto, vocab.free_upto, vocab.text_upto)  # by free_string (2: see below)
        self.row_last = (vocab.text_upto.shape[0] - 1, vocab.free_upto.shape[0] - 1, vocab.text_upto.shape[0] - 1)
        self.last_rows = (vocab.text_upto[-1], vocab.free_upto[-1])  # the rows of unbounded strings, as views
        # free 2: a string state refusing some plain byte groups (S_PLAIN 2, see CompiledGrammar): the text rows
        # less the tokens holding such a byte or one of the multi-byte characters it refuses (``excluded_chars``)
        # (the last row kept per state; rows are built once per vocabulary)
        excluded = kernel_args[9][:, 3]
        # (one row per distinct (groups, characters) here too: the vocabulary's cache may be full)
        chars = excluded_chars or {}
        rows: dict[tuple, np.ndarray] = {}
        self.excluded_rows = {}
        for q in np.flatnonzero(plain_kind == 2).tolist():
            key = (int(excluded[q]), chars.get(q, ()))
            row = rows.get(key)
            if row is None:
                row = rows[key] = vocab.text_row_without(*key)
            self.excluded_rows[q] = row
        n = automaton.num_states
        # the stack read depth each state's masks depended on so far (keys grow with it)
        self.depth = [0] * n
        # per state, ready for the miss path: the key while the mask depends on neither the stack nor a counter
        self.simple_key = [None if c else (q, None, -1) for q, c in enumerate(self.counted)]
        # two kinds of dense entries: the walk for a key, and the whole mask for (key, rows and stops)
        self.masks: dict[tuple, np.ndarray] = {}
        self.limit = MASK_CACHE_ENTRIES  # entries, the seeded ones below not counted
        # generic JSON: start from the masks its vocabulary computed at load (see seed_generic_masks)
        for seed_automaton, seed_depth, masks, depth in getattr(vocab, "generic_mask_seeds", ()):
            if seed_depth == max_depth and same_automaton(seed_automaton, automaton):
                self.masks.update(masks)
                self.depth = list(depth)
                self.limit += len(masks)
                break
        # literal states (one plain byte out, no call, not accepting, no counter or class row): their masks,
        # sparse, computed here in one kernel call, where they depend on neither the stack nor the counter
        self.literal = self._literal_masks(automaton, vocab)
        # reference states (see .state_reference), found on a state's first miss: _UNSET, None or (r, bytes)
        self.automaton = automaton
        self.refs: list = [_UNSET] * n
        # a string or class loop: its mask is cheap (suffix tries, rows), so other states may copy it
        self.cheap = [bool(p or g) for p, g in zip(self.plain, self.class_groups, strict=True)]
        nodes, _ids, _sub, roots = kernel_args[:4]
        first = roots[0]
        self.tokens_by_first_byte = np.where(first >= 0, nodes[nodes[first, 2], 3] - nodes[first, 3], 0)
        self.no_reference = bool(vocab._stops_have_bytes)  # a walk may set a stop token: keep the plain walk

    def reference(self, q: int):
        """None, or (r, walk_bytes): ``q``'s mask is ``r``'s but for the tokens of those first bytes."""
        ref = self.refs[q]
        if ref is _UNSET:
            ref = None
            if not (self.no_reference or self.cheap[q] or self.literal[q] is not None):
                ref = reference_state(self.automaton, q, self.cheap, self.tokens_by_first_byte)
            self.refs[q] = ref
        return ref

    def _literal_masks(self, automaton, vocab) -> list:
        """Per state: None, or (words, values, lo, hi): the literal state's mask is ``values[lo:hi]`` at
        ``words[lo:hi]``, zero elsewhere."""
        n = automaton.num_states
        states, state_bytes = literal_states(self.kernel_args, automaton.counted)
        result: list = [None] * n
        if states.shape[0] == 0:
            return result
        words = self.words
        arena, levels = allocate_scratch(self.max_depth, vocab.tables.max_token_bytes)
        ends = np.zeros(states.shape[0], np.intp)
        reads = np.zeros(states.shape[0], np.intp)
        capacity = min(SPARSE_WORDS, 16 * states.shape[0] + 256)
        out_words = np.empty(capacity, np.intp)
        out_values = np.empty(capacity, np.uint32)
        byte_of = np.full(n, -1, dtype=np.int32)  # each literal state's byte
        byte_of[states] = state_bytes
        next_bytes = byte_of[automaton.trans[states, state_bytes]]
        done = fill_masks_sparse(self.kernel_args, states, state_bytes, next_bytes, vocab.second_byte_nodes,
                                 self.max_depth, (arena, levels), np.zeros(words, np.uint32),
                                 np.empty(words + 1, np.int32), out_words, out_values, ends, reads)
        if done == 0:
            return result
        total = int(ends[done - 1])
        w = out_words[:total].copy()
        v = out_values[:total].view(np.int32).copy()
        if vocab._stops_have_bytes:  # literal states never allow stopping: clear any stop token a walk set
            for word, _bit, clear in vocab._stop_bits:
                v[w == word] &= clear.view(np.int32)
        lo = 0
        for q, hi, read in zip(states[:done].tolist(), ends[:done].tolist(), reads[:done].tolist()):
            if read == 0:  # else its mask depends on the stack: the dense path
                result[q] = (w, v, lo, hi)
            lo = hi
        return result

    def key(self, q: int, counter: int, stack: np.ndarray, stack_len: int, depth: int) -> tuple:
        """(state, string-length slack that can matter, the stack top the mask depended on)."""
        if self.counted[q]:
            cap = self.cap[q]
            slack = (min(max(self.cmin[q] - counter, 0), cap), min(self.cmax[q] - counter, cap))
        else:
            slack = None
        if depth == 0 or stack_len == 0:
            return (q, slack, stack_len if depth > stack_len else -1)
        return (q, slack, stack[max(0, stack_len - depth):stack_len].tobytes(), depth > stack_len)


class CachedMaskFill:
    """The matcher's mask fill through its grammar's :class:`MaskCache` (mixed into ``GrammarMatcher``).

    Reads the matcher's ``_cache``, ``_vocab``, ``_state``, ``_counter``, ``_stack``, ``_stack_len``,
    ``_arena``, ``_levels``, ``_error``, ``_terminated``; keeps ``_out``/``_out_bits`` (the last bitmask and its
    uint32 view) and ``_ref_mask`` (a reference state's mask, allocated on first use).
    """

    def fill_next_token_bitmask(self, bitmask: np.ndarray) -> None:
        """Write the allowed next tokens into ``bitmask`` (int32, >= ceil(vocab/32) words)."""
        c = self._cache
        words = c.words
        dtype = bitmask.dtype
        if (dtype is not _INT32 and dtype != np.int32) or bitmask.ndim != 1 or len(bitmask) < words:
            raise ValueError(f"bitmask must be 1-D int32 with >= {words} words, got {bitmask.dtype} {bitmask.shape}")
        out = bitmask if len(bitmask) == words else bitmask[:words]
        if self._error or self._terminated:
            out[:] = 0
            self._set_stops(out, True)
            return
        q = self._state
        literal = c.literal[q]
        if literal is not None:  # a key's characters, punctuation: a few words (stopping is never allowed there)
            words_, values, lo, hi = literal
            out.fill(0)
            out[words_[lo:hi]] = values[lo:hi]
            return
        counter = self._counter
        stack_len = self._stack_len
        key = c.simple_key[q]
        if key is None or c.depth[q]:
            key = c.key(q, counter, self._stack, stack_len, c.depth[q])
        # the whole mask also depends on which plain-token rows fit the room left and on the stop tokens
        stop = stack_len == 0 and c.final[q]
        if c.plain[q]:
            room = c.cmax[q] - counter
            free = c.free[q]
            extra = (free, min(room, c.row_last[free]), stop)
        else:
            extra = stop
        if stack_len >= c.deep_stack:  # near max_depth: fresh, uncached (see MaskCache.deep_stack)
            self._fill_miss(out, q, key, extra, stop, store=False)
            return
        masks = c.masks
        cached = masks.get((key, extra))
        if cached is not None:  # the common case: one 16 KB copy
            np.copyto(out, cached)
            return
        if extra is not False or key in masks or len(masks) >= c.limit - 1:
            self._fill_miss(out, q, key, extra, stop)
            return
        # the usual miss (not a string state, stopping not allowed, walk not cached): one walk, one copy
        # cached under both keys
        read = self._walk(out, q)
        groups = c.class_groups[q]
        if groups:  # the tokens of class bytes only, which the walk skipped
            np.bitwise_or(out, self._class_row(q, groups), out=out)
        if read > c.depth[q]:
            c.depth[q] = read
            key = c.key(q, counter, self._stack, stack_len, read)
        if self._vocab._stops_have_bytes and self._vocab._stop_bits:  # the walk may have set a stop token
            masks[key] = out.copy()
            self._set_stops(out, False)
            masks[(key, False)] = out.copy()
            return
        masks[key] = masks[(key, False)] = out.copy()

    def _fill_miss(self, out: np.ndarray, q: int, key: tuple, extra: object, stop: bool, store: bool = True) -> None:
        c = self._cache
        plain = c.plain[q]
        walked = c.masks.get(key) if store else None
        if walked is not None:
            if not plain:
                np.copyto(out, walked)
        else:
            # in a string state the walk covers the non-plain tokens only (the rows below add the rest)
            groups = c.class_groups[q]
            read = self._walk(out, q)
            if groups:  # the tokens of class bytes only, which the walk skipped
                np.bitwise_or(out, self._class_row(q, groups), out=out)
            if read > c.depth[q]:
                c.depth[q] = read
                key = c.key(q, self._counter, self._stack, self._stack_len, read)
            if plain and not c.counted[q] and not c.final[q]:
                pass  # an unbounded string body has one whole mask per key: no walk entry (one copy less)
            elif store and len(c.masks) < c.limit:
                c.masks[key] = walked = out.copy()
        vocab = self._vocab
        set_stops = vocab._stop_bits and (stop or vocab._stops_have_bytes)
        if plain:  # OR in the plain (and, in a free string, open) tokens that fit the room left
            free, row, _ = extra
            last = row == c.row_last[free]
            if free == 2:  # the row less the tokens with a byte this string refuses
                rows = c.excluded_rows[q]
                if not last:
                    rows = np.bitwise_and(rows, c.row_tables[free][row], out=self._row_scratch())
            else:
                rows = c.last_rows[free] if last else c.row_tables[free][row]
            np.bitwise_or(walked if walked is not None else out, rows, out=out)
            if not last:
                # near the end of a bounded string the row changes at every character: keep only the walk
                if set_stops:
                    self._set_stops(out, stop)
                return
        if set_stops:
            self._set_stops(out, stop)
        if store and len(c.masks) < c.limit:
            c.masks[(key, extra)] = walked if walked is not None and not plain and not set_stops else out.copy()

    def _walk(self, out: np.ndarray, q: int) -> int:
        """The kernel walk of state ``q`` into ``out``; returns the stack read depth. Through a reference state
        where ``q`` has one: that state's whole mask (from the cache, or filled here), then only the first
        bytes where the two differ."""
        if out is not self._out:  # callers usually pass the same bitmask every step
            self._out, self._out_bits = out, out.view(np.uint32)
        bits = self._out_bits
        c = self._cache
        ref = c.reference(q)
        if ref is None:
            return fill_next_token_bitmask_prepared(*c.kernel_args, q, self._counter, self._stack, self._stack_len,
                                                    c.max_depth, self._arena, self._levels, bits)
        r, walk_bytes = ref
        ref_mask = self._ref_mask
        if ref_mask is None:
            ref_mask = self._ref_mask = np.zeros(c.words, np.int32)
        self._state = r  # r's mask in the same configuration, through the cache (r has no reference itself)
        try:
            self.fill_next_token_bitmask(ref_mask)
        finally:
            self._state = q
        self._out, self._out_bits = out, bits
        self._set_stops(ref_mask, False)
        read = fill_next_token_bitmask_from_reference(*c.kernel_args, q, self._counter, self._stack, self._stack_len,
                                                      c.max_depth, self._arena, self._levels, bits,
                                                      ref_mask.view(np.uint32), walk_bytes)
        return max(read, c.depth[r])

    def _class_row(self, q: int, groups: int) -> np.ndarray:
        """The token row of ``q``'s class: up to its bound, or (class_len -2, a class inside a length-bounded
        string, one character per byte) up to the room left (the mask key holds the room up to a token's
        length, see MaskCache.key)."""
        c = self._cache
        bound = c.class_len[q]
        if bound == -2:
            room = c.cmax[q] - self._counter
            bound = room if room < c.longest_token else -1
        return self._vocab.class_row(groups, bound)

    def _row_scratch(self) -> np.ndarray:
        row = getattr(self, "_row_buffer", None)
        if row is None:
            row = self._row_buffer = np.empty(self._cache.words, np.int32)
        return row

    def _set_stops(self, out: np.ndarray, allowed: bool) -> None:
        bits = out.view(np.uint32)
        for word, bit, clear in self._vocab._stop_bits:
            if allowed:
                bits[word] |= bit
            else:
                bits[word] &= clear


# walked byte by byte at vocabulary load through the generic JSON grammars: every kind of value in objects and
# arrays, nested three deep, so their first masks in a request are cache hits
_ITEMS = b'1,-2.5,3e2,"x",true,null,false,{},[],7'  # each kind of value, then one before a closer
_MEMBERS = b'"a":1,"b":-2.5,"c":3e2,"d":"x","e":true,"f":null,"g":false,"h":{},"i":[],"j":7'
GENERIC_SAMPLES = (
    b'{' + _MEMBERS + b',"o":{' + _MEMBERS + b'},"l":[' + _ITEMS + b'],"z":7}',
    b'[' + _ITEMS + b',{' + _MEMBERS + b'},[' + _ITEMS + b'],7]',
    b'{"a":{"b":[1,-2.5e3,true,"x",{"c":[0.5,{}]},[]],"d":{"e":"f","n":15}},"j":[[-0.25E+2,[7]],{"k":null}],'
    b'"o":{"p":{"q":[1,[2,3]]}}}',
)


def same_automaton(a, b) -> bool:
    """Whether two automata are the same tables (a few microseconds when their sizes differ)."""
    if a is b:
        return True
    if a.num_states != b.num_states or a.start != b.start:
        return False
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in (
        "trans", "flags", "final", "call_start", "call_ret", "cmin", "cmax", "plain_loop", "free_string", "counted"))


def seed_generic_masks(grammar, samples: tuple[bytes, ...] = GENERIC_SAMPLES) -> tuple[dict, list[int]]:
    """Fill ``grammar``'s cache along ``samples`` one single-byte token at a time (in every value, object and
    array position the samples reach) and return (its dense entries, its stack read depths). A vocabulary
    without a token for some sample byte stops there. ~2 ms per grammar at 128k tokens."""
    vocab = grammar.vocab
    lengths = np.diff(vocab.tables.token_offsets)
    single = {}
    for tid in np.flatnonzero(lengths == 1).tolist():
        single.setdefault(vocab.token_bytes(tid), tid)
    mask = np.zeros((vocab.vocab_size + 31) // 32, dtype=np.int32)
    # twice: a state's key grows with the stack depth its masks were seen to read, so the entries of the first
    # pass made before that depth was known are found only by the second
    for sample in samples + samples:
        m = grammar.matcher()
        for b in sample:
            m.fill_next_token_bitmask(mask)
            tid = single.get(bytes([b]))
            if tid is None or not m.advance(tid):
                break
        else:
            m.fill_next_token_bitmask(mask)
    cache = grammar._mask_cache
    return dict(cache.masks), list(cache.depth)
