"""Grammar-constrained decoding for JSON: compile once per (schema, tokenizer), one cheap matcher per request.

    vocab = TokenVocabulary.from_tokenizer_file(path, vocab_size=128256, stop_token_ids=(128009,))
    grammar = compile_json_schema({"type": "object", ...}, vocab)   # LRU-cached, immutable
    matcher = grammar.matcher()                                    # per request
    matcher.fill_next_token_bitmask(bitmask)                       # bit set = allowed
    matcher.advance(token_id)                                      # False + error state if disallowed

Error contract (as llguidance): API misuse raises; a disallowed token from the model does not raise, it
puts the matcher in an error state where only stop tokens are allowed, so the sequence ends.

Masks: a compiled grammar keeps a bounded mask cache shared by its matchers
(:mod:`realizar_ort.grammar.mask_cache`: a hit is one 16 KB copy, ~1.3 us per step at 128k tokens; a literal
key or punctuation state is a sparse write). A miss runs the numba trie walk
(:mod:`realizar_ort.kernels.token_mask`, ~2-30 us; the string bodies walk only the suffix tries of string
tokens). Character classes (``[A-Za-z0-9._%+-]+``, ``[A-Z]{3}``, digits) use a per-vocabulary token row
(``TokenVocabulary.class_row``, ~40 us the first time a vocabulary sees a class; digits and the email classes
are computed at load) and the walk skips every subtree that holds only class tokens. Matchers are not
thread-safe; different matchers of one grammar may run in different threads (the kernel releases the GIL).

Memory: up to 8 MB of cached masks per grammar at 128k vocab; ``compile_json_schema`` keeps 64 grammars; a
vocabulary holds ~10 MB of tables (tries, string rows), ~5 MB of generic JSON masks, plus up to
``CLASS_ROW_ENTRIES`` class rows.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..kernels.forced_bytes import FORCED_DEAD, allocate_forced_scratch, forced_bytes
from ..kernels.plain_closure import plain_closed_states
from ..kernels.token_classes import (
    class_loop_entries,
    loop_byte_groups,
    short_tokens_within_groups,
    tokens_within_groups,
)
from ..kernels.token_mask import (
    advance_token_bytes,
    allocate_scratch,
    allocate_token_bitmask,
    apply_token_bitmask_inplace,
    prepare_fill_arguments,
)
from .automaton import INC, PLAIN_ASCII, ROOM, utf8_multibyte_paths
from .json_schema import (
    Automaton,
    GrammarError,
    GrammarTooLargeError,
    UnsupportedSchemaError,
    compile_schema_automaton,
)
from .mask_cache import CachedMaskFill, MaskCache, seed_generic_masks
from .schema_shape import check_schema_shape
from .vocab import (
    BYTE_GROUP,
    NUM_BYTE_GROUPS,
    PLAIN_GROUPS,
    VocabTables,
    build_vocab_tables,
    load_vocab_tables,
    pack_forest,
    plain_suffix_trie,
)

__all__ = [
    "CompiledGrammar",
    "GrammarError",
    "GrammarMatcher",
    "GrammarTooLargeError",
    "JsonGrammar",
    "TokenVocabulary",
    "UnsupportedSchemaError",
    "allocate_token_bitmask",
    "compile_json_schema",
]

DEFAULT_MAX_DEPTH = 64
CLASS_CLOSURE_STATES = 160  # class shortcut of a state whose class bytes keep it in at most this many states
CLASS_ROW_ENTRIES = 256  # per vocabulary: token rows of character classes, 16 KB each at 128k vocab
# (class bytes, longest token or -1) whose token rows each vocabulary computes up front (~40 us each): the
# digit loop of every JSON number, the loops of the built-in ``email`` format (local part, domain label),
# and the 2- and 4-digit runs of the date/time formats
_DIGITS = bytes(range(0x30, 0x3A))
_ASCII_ALNUM = _DIGITS + bytes(range(0x41, 0x5B)) + bytes(range(0x61, 0x7B))
COMMON_CLASSES = ((_DIGITS, -1), (_ASCII_ALNUM + b"._%+-", -1), (_ASCII_ALNUM + b"-", -1), (_DIGITS, 2), (_DIGITS, 4))
# each byte group as a 256-bit set (uint64 [groups, 4]), and each byte's group as a bit
_GROUP_WORDS = np.packbits(BYTE_GROUP[None, :] == np.arange(NUM_BYTE_GROUPS)[:, None], axis=1,
                           bitorder="little").view(np.uint64)
_GROUP_BIT = np.left_shift(np.uint64(1), BYTE_GROUP.astype(np.uint64))  # per byte


_CHAR_PATHS = [[r] for r in PLAIN_ASCII] + utf8_multibyte_paths()  # one plain string character, as byte ranges


def _merge_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row ``k`` = ``a[min(k, last)] | b[min(k, last)]``: two "tokens needing at most k" tables in one."""
    k = np.arange(max(a.shape[0], b.shape[0]))
    return np.bitwise_or(a[np.minimum(k, a.shape[0] - 1)], b[np.minimum(k, b.shape[0] - 1)])


def _second_byte_nodes(nodes: np.ndarray) -> np.ndarray:
    """``table[b1, b2]``: the depth-2 node of the bytes ``b1 b2`` in a trie's DFS-ordered ``nodes``, or -1."""
    depth = nodes[:, 1]
    first = np.flatnonzero(depth == 1)
    second = np.flatnonzero(depth == 2)
    parent = first[np.searchsorted(first, second) - 1]
    table = np.full((256, 256), -1, dtype=np.int32)
    table[nodes[parent, 0], nodes[second, 0]] = second
    return table


class TokenVocabulary:
    """The bytes of every token of one tokenizer, cut to a model's logits width, plus its stop tokens.

    Immutable and shareable across threads (the class-row cache is filled under a lock). Ids
    ``>= vocab_size`` are never allowed; special/added tokens are never allowed inside JSON;
    ``stop_token_ids`` are allowed exactly when the value is complete. Building one from loaded tables
    costs ~30 ms (the kernel's trie layout with the suffix tries, the string rows, the common class rows, the
    generic JSON masks).
    """

    _cache: ClassVar[dict[tuple, TokenVocabulary]] = {}
    _cache_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, tables: VocabTables, stop_token_ids: Sequence[int], identity: str) -> None:
        stops = tuple(dict.fromkeys(int(t) for t in stop_token_ids))
        for t in stops:
            if not 0 <= t < tables.vocab_size:
                raise ValueError(f"stop token id {t} is outside the vocabulary [0, {tables.vocab_size})")
        self.tables = tables
        self.vocab_size = tables.vocab_size
        self.stop_token_ids = np.asarray(stops, dtype=np.int64)
        self._stop_set = frozenset(stops)
        self.cache_key = (identity, tables.vocab_size, stops)
        # (word, bit) per stop token, as numpy scalars ready for in-place |= / &= on a uint32 view
        self._stop_bits = [(t >> 5, np.uint32(1 << (t & 31)), np.uint32(~(1 << (t & 31)) & 0xFFFFFFFF))
                           for t in stops]
        # a stop token with bytes could be set by a walk: then masks must clear it when stopping is not allowed
        self._stops_have_bytes = any(tables.token_offsets[t + 1] > tables.token_offsets[t] for t in stops)
        # the most stack frames one token can push (see MaskCache.deep_stack): JSON nests one level per '[' or
        # '{', and a token's leaf value (a string, number or literal, and an escape in it) adds at most two
        opens = np.concatenate(([0], np.cumsum(np.isin(tables.token_data, (ord("["), ord("{"))), dtype=np.int64)))
        self.max_pushes_per_token = int((opens[tables.token_offsets[1:]] - opens[tables.token_offsets[:-1]]).max(
            initial=0)) + 2
        # the tokens a string state takes without a walk, by the characters of room they need (2 MB each at
        # 128k): plain text, plus a partial UTF-8 character at the end; inside a free string any open token
        self.text_upto = _merge_rows(tables.plain_upto, tables.text_open_upto)
        self.free_upto = _merge_rows(tables.plain_upto, tables.open_upto)
        # tries 3 and 4: tries 1 and 2 keyed by what follows the leading plain bytes, for unbounded string bodies
        forest = pack_forest([tables.trie, tables.rest_trie, tables.close_trie,
                              plain_suffix_trie(tables.rest_trie, tables), plain_suffix_trie(tables.close_trie, tables)])
        self.vocab_arrays = (forest.nodes, forest.token_ids, forest.sub_groups, forest.root_children,
                             self.text_upto, self.free_upto, tables.max_token_bytes, np.uint64(PLAIN_GROUPS),
                             _GROUP_BIT)
        # the full trie's node for each first two bytes (int32 [256, 256], -1 = none; 256 KB)
        self.second_byte_nodes = _second_byte_nodes(forest.nodes[: forest.roots[0, 1]])
        self._class_rows: dict[tuple[int, int], np.ndarray] = {}
        lengths = np.diff(tables.token_offsets)
        self._ids_by_length = np.argsort(lengths, kind="stable").astype(np.int32)
        self._length_starts = np.searchsorted(lengths[self._ids_by_length], np.arange(int(lengths.max()) + 2))
        self._groups_by_length = tables.token_groups[self._ids_by_length]
        self._class_lock = threading.Lock()
        for members, max_len in COMMON_CLASSES:
            self.class_row(int(np.bitwise_or.reduce(_GROUP_BIT[np.frombuffer(members, dtype=np.uint8)])), max_len)
        # the masks of generic JSON (``response_format: json_object``), computed once here (~15 ms at 128k
        # tokens, ~5 MB): a grammar with the same automaton starts with them cached (see grammar_mask_cache)
        self.generic_mask_seeds: tuple = ()
        seeds = []
        for schema in ("any_object", "any_json"):
            grammar = CompiledGrammar(compile_schema_automaton(schema), self)
            seeds.append((grammar.automaton, grammar.max_depth, *seed_generic_masks(grammar)))
        self.generic_mask_seeds = tuple(seeds)

    def class_row(self, groups: int, max_len: int = -1) -> np.ndarray:
        """Bitmask of the tokens whose bytes all lie in the byte groups ``groups`` (a character class).

        Computed once per class and vocabulary (~0.1-0.3 ms at 128k tokens), then shared by every grammar
        of this vocabulary (bounded, first come). Read-only."""
        row = self._class_rows.get((groups, max_len))
        if row is None:
            row = allocate_token_bitmask(self.vocab_size)
            if 0 <= max_len <= 8:  # a bounded run: read only the short tokens
                short_tokens_within_groups(self._groups_by_length, self._ids_by_length, self._length_starts,
                                           groups, max_len, row)
            else:
                tokens_within_groups(self.tables.token_groups, self.tables.token_offsets, groups, row, max_len)
            row.flags.writeable = False
            with self._class_lock:
                if len(self._class_rows) < CLASS_ROW_ENTRIES:
                    row = self._class_rows.setdefault((groups, max_len), row)
        return row

    def text_row_without(self, groups: int, chars: tuple[bytes, ...] = ()) -> np.ndarray:
        """The unbounded string row (``text_upto[-1]``) less the tokens holding a byte of the groups ``groups``
        or one of the multi-byte characters ``chars`` (UTF-8, whole): the row of string states that refuse those
        (``S_PLAIN`` 2, see :mod:`..kernels.plain_closure`). Cached with the class rows (~0.2 ms each at 128k
        tokens, plus ~0.5 ms per character the first time in a process). Read-only."""
        row = self._class_rows.get(("text without", groups, chars))
        if row is None:
            has = (self.tables.token_groups & np.uint64(groups)) != 0
            has = np.pad(has, (0, 32 * self.text_upto.shape[1] - has.shape[0]))
            out = np.packbits(has, bitorder="little").view(np.int32)
            for char in chars:
                out |= self._tokens_with_char(char)
            row = self.text_upto[-1] & ~out
            row.flags.writeable = False
            with self._class_lock:
                if len(self._class_rows) < CLASS_ROW_ENTRIES:
                    row = self._class_rows.setdefault(("text without", groups, chars), row)
        return row

    def _tokens_with_char(self, char: bytes) -> np.ndarray:
        """Bitmask of the tokens whose bytes hold ``char`` (a whole multi-byte UTF-8 character: its lead byte
        is never a continuation byte, so in a token of plain text every occurrence is that character)."""
        row = self._class_rows.get(("char", char))
        if row is None:
            data, offsets = self.tables.token_data, self.tables.token_offsets
            n = len(char)
            at = np.flatnonzero(data[:max(0, data.shape[0] - n + 1)] == char[0])
            for j in range(1, n):
                at = at[data[at + j] == char[j]]
            tids = np.searchsorted(offsets, at, side="right") - 1
            tids = tids[at + n <= offsets[tids + 1]]  # the whole character inside one token
            row = allocate_token_bitmask(self.vocab_size)
            np.bitwise_or.at(row.view(np.uint32), tids >> 5, np.left_shift(np.uint32(1), (tids & 31).astype(np.uint32)))
            row.flags.writeable = False
            with self._class_lock:
                if len(self._class_rows) < CLASS_ROW_ENTRIES:
                    row = self._class_rows.setdefault(("char", char), row)
        return row

    @classmethod
    def from_tokenizer_file(cls, path: str | os.PathLike[str], vocab_size: int | None = None,
                            stop_token_ids: Sequence[int] = ()) -> TokenVocabulary:
        """Load (and cache on disk and in-process) the tables for a ``tokenizer.json``.

        ``vocab_size``: the model's logits width (defaults to the tokenizer's id count). Cost: ~1.5 s the
        first time for 128k tokens, then a disk-cache load (~50 ms), then an in-process dict hit (keyed by
        path, mtime and size; objects are shared per (sha256, vocab_size, stop ids)).
        """
        p = Path(path).resolve()
        st = p.stat()
        key = (str(p), st.st_mtime_ns, st.st_size, vocab_size, tuple(int(t) for t in stop_token_ids))
        with cls._cache_lock:
            hit = cls._cache.get(key)
        if hit is not None:
            return hit
        tables, sha = load_vocab_tables(p, vocab_size)
        vocab = cls(tables, stop_token_ids, sha)
        with cls._cache_lock:  # one object per (sha256, vocab_size, stops), whatever the path
            vocab = cls._cache.setdefault(vocab.cache_key, vocab)
            cls._cache[key] = vocab
        return vocab

    @classmethod
    def from_token_bytes(cls, token_bytes: Sequence[bytes | None], stop_token_ids: Sequence[int] = (),
                         vocab_size: int | None = None) -> TokenVocabulary:
        """A vocabulary from explicit per-id bytes (``None`` = never allowed inside JSON). For tests/tools."""
        size = len(token_bytes) if vocab_size is None else vocab_size
        tables = build_vocab_tables(list(token_bytes), size)
        identity = "bytes:" + str(hash(tuple(token_bytes)))
        return cls(tables, stop_token_ids, identity)

    def token_bytes(self, token_id: int) -> bytes:
        return self.tables.token_bytes(token_id)

    def is_stop(self, token_id: int) -> bool:
        return token_id in self._stop_set


class CompiledGrammar:
    """An immutable automaton bound to a vocabulary, plus the mask cache its matchers share."""

    def __init__(self, automaton: Automaton, vocab: TokenVocabulary, max_depth: int = DEFAULT_MAX_DEPTH,
                 string_shortcuts: bool = True, class_shortcuts: bool = True) -> None:
        self.automaton = automaton
        self.vocab = vocab
        self.max_depth = max_depth
        n = automaton.num_states
        info = np.zeros((n, 8), dtype=np.int32)
        info[:, 0] = automaton.final
        info[:, 1] = automaton.call_start
        info[:, 2] = automaton.call_ret
        info[:, 3] = automaton.cmin
        info[:, 4] = automaton.cmax
        # string states: plain loops, and (string_shortcuts) the other states no run of plain characters can
        # kill (an unanchored pattern's search states, see kernels/plain_closure.py): the kernel's string
        # shortcut (a plain-token row plus a walk of the rest trie) is exact at both
        # (S_PLAIN 2: those refusing some plain byte groups, ``excluded``: their row lacks the tokens with one)
        info[:, 5] = automaton.plain_loop
        # (and ``excluded_chars``: the multi-byte characters such a state refuses, by state, e.g. U+2028 under '.')
        excluded = np.zeros(n, dtype=np.uint64)
        self.excluded_chars: dict[int, tuple[bytes, ...]] = {}
        if string_shortcuts:
            closed, excluded, chars = plain_closed_states(automaton.arrays, automaton.counted, _CHAR_PATHS,
                                                          _GROUP_BIT, INC, ROOM)
            some = excluded != 0
            some[list(chars)] = True
            info[:, 5] = np.where(automaton.plain_loop, 1, np.where(closed, np.where(some, 2, 1), 0))
            excluded[info[:, 5] != 2] = 0
            self.excluded_chars = {q: c for q, c in chars.items() if info[q, 5] == 2}
        info[:, 6] = automaton.free_string
        # per state: the byte groups wholly inside its flag-free self-loop
        loop_groups, exact = loop_byte_groups(automaton.loop_bits, _GROUP_WORDS)
        # character-class loops (not a string body, loop bytes exactly a union of byte groups) and, per
        # state, the class loop it leads to: see fill_next_token_bitmask's class shortcut
        classes = np.flatnonzero((loop_groups != 0) & ~automaton.plain_loop & exact)
        # (``class_shortcuts=False``: none, the whole-trie walk the tests compare the shortcuts with)
        class_groups, class_exit, class_len = class_loop_entries((automaton.trans, automaton.flags, info),
                                                                 loop_groups, classes, _GROUP_BIT,
                                                                 max_closure=CLASS_CLOSURE_STATES,
                                                                 longest=vocab.tables.max_token_bytes)
        if not class_shortcuts:
            class_groups, class_exit, class_len = (np.zeros_like(class_groups), np.zeros_like(class_exit),
                                                   np.zeros_like(class_len))
        # string bodies (plain_loop: every plain byte loops back with no flag, or only INC when length-bounded)
        # with no class shortcut: the kernel walks the suffix tries there (S_SUFFIX: 1 = always, -k = while the
        # counter is at least cmin or k below it, and k below cmax, i.e. the length bounds cannot bite inside
        # one token)
        t = vocab.tables
        cap = np.where(automaton.free_string, t.close_max_chars + 1, t.rest_max_chars + 1)
        loops = automaton.plain_loop & (class_groups == 0)
        info[:, 7] = np.where(loops, np.where(automaton.counted, -cap, 1), 0)
        # groups whose every string is accepted: a state's own loop, or the class of the loop it leads to
        accept_groups = loop_groups.copy()
        leads = (class_groups != 0) & (class_len == -1)  # not -2: a counted class, bounded by the room left
        accept_groups[leads] = class_groups[leads]
        self.automaton_arrays = (automaton.trans, automaton.flags, info, accept_groups)
        # string-length slack beyond what one token can use does not change a walk (see VocabTables)
        t = vocab.tables
        self._slack_cap = np.where(automaton.free_string, t.close_max_chars + 1,
                                   np.where(automaton.plain_loop, t.rest_max_chars + 1, t.max_token_bytes + 1))
        self._kernel_args = prepare_fill_arguments(vocab.vocab_arrays, self.automaton_arrays, class_groups, class_exit,
                                                   excluded)
        self._mask_cache = MaskCache(automaton, vocab, class_groups, class_len, self._slack_cap, self._kernel_args,
                                     max_depth, self.excluded_chars)
        # per-state facts as Python lists (shared with the mask cache)
        self._final_l = self._mask_cache.final
        self._class_groups_l = self._mask_cache.class_groups
        self._class_exit_l = class_exit.tolist()
        self._class_len_l = self._mask_cache.class_len

    def matcher(self) -> GrammarMatcher:
        """A fresh matcher at the start of the value. Cheap (a few small arrays)."""
        return GrammarMatcher(self)

    @property
    def num_states(self) -> int:
        return self.automaton.num_states


class GrammarMatcher(CachedMaskFill):
    """Per-request cursor over a :class:`CompiledGrammar`. Not thread-safe; cheap to create."""

    def __init__(self, grammar: CompiledGrammar) -> None:
        self.grammar = grammar
        self._vocab = grammar.vocab
        self._stack = np.zeros(grammar.max_depth, dtype=np.int32)
        self._scratch = allocate_scratch(grammar.max_depth, grammar.vocab.tables.max_token_bytes)
        self._arena, self._levels = self._scratch
        self._cache = grammar._mask_cache
        self._out: np.ndarray | None = None  # the last bitmask filled, and its uint32 view
        self._out_bits: np.ndarray | None = None
        self._ref_mask: np.ndarray | None = None  # a reference state's mask (see mask_cache), made on first use
        self._ff_arena: np.ndarray | None = None  # fast-forward scratch, made on first use
        self._ff_capacity = 0
        self._ff_stack = np.zeros(grammar.max_depth, dtype=np.int32)
        self.reset()

    def reset(self) -> None:
        self._state = self.grammar.automaton.start
        self._counter = 0
        self._stack_len = 0
        self._history: list[tuple[int, int, bytes, bool]] = []
        self._error = False
        self._terminated = False

    # -- queries
    @property
    def is_error(self) -> bool:
        return self._error

    def is_terminated(self) -> bool:
        return self._terminated

    def is_accepting(self) -> bool:
        """True when the value so far is complete (a stop token would be allowed)."""
        return not self._error and self._stack_len == 0 and self.grammar._final_l[self._state]

    # -- masks: fill_next_token_bitmask comes from CachedMaskFill
    def allowed_token_ids(self) -> np.ndarray:
        """The allowed next token ids, ascending (allocates; for tests and debugging)."""
        mask = allocate_token_bitmask(self._vocab.vocab_size)
        self.fill_next_token_bitmask(mask)
        bits = np.unpackbits(mask.view(np.uint8), bitorder="little")[: self._vocab.vocab_size]
        return np.flatnonzero(bits)

    # -- moves
    def advance(self, token_id: int) -> bool:
        """Consume one token. Returns False (and enters the error state) if it is not allowed."""
        if self._error or self._terminated:
            self._error = True
            return False
        token_id = int(token_id)
        if self._vocab.is_stop(token_id):
            if not self.is_accepting():
                self._error = True
                return False
            self._push_history()
            self._terminated = True
            return True
        tables = self._vocab.tables
        if not 0 <= token_id < tables.vocab_size:
            self._error = True
            return False
        lo, hi = tables.token_offsets[token_id], tables.token_offsets[token_id + 1]
        if hi == lo:
            self._error = True
            return False
        prev = (self._state, self._counter, self._stack[: self._stack_len].tobytes(), self._terminated)
        q, counter, stack_len = advance_token_bytes(self.grammar.automaton_arrays, tables.token_data[lo:hi],
                                                    self._state, self._counter, self._stack, self._stack_len,
                                                    self.grammar.max_depth, self._scratch)
        if q < 0:
            self._error = True
            return False
        self._history.append(prev)
        self._state, self._counter, self._stack_len = q, counter, stack_len
        return True

    def _push_history(self) -> None:
        self._history.append((self._state, self._counter, self._stack[: self._stack_len].tobytes(),
                              self._terminated))

    def rollback(self, n: int) -> None:
        """Undo the last ``n`` accepted tokens (clears an error state)."""
        if n < 0 or n > len(self._history):
            raise ValueError(f"cannot roll back {n} tokens: {len(self._history)} accepted")
        self._error = False
        for _ in range(n):
            state, counter, stack, terminated = self._history.pop()
            self._state, self._counter, self._terminated = state, counter, terminated
            arr = np.frombuffer(stack, dtype=np.int32)
            self._stack[: arr.shape[0]] = arr
            self._stack_len = arr.shape[0]

    @property
    def num_accepted(self) -> int:
        return len(self._history)

    # -- fast-forward (used by :mod:`realizar_ort.grammar.forced`)
    def configuration(self) -> tuple[int, int, bytes] | None:
        """A hashable key of where the matcher is (state, string counter, stack): what it accepts from here
        depends on nothing else. None in the error or terminated state."""
        if self._error or self._terminated:
            return None
        return self._state, self._counter, self._stack[: self._stack_len].tobytes()

    def previous_configuration(self) -> tuple[int, int, bytes] | None:
        """``configuration()`` as it was before the last accepted token (None when nothing was accepted)."""
        if not self._history:
            return None
        state, counter, stack, terminated = self._history[-1]
        return None if terminated else (state, counter, stack)

    def forced_bytes(self, out: np.ndarray, next_allowed: np.ndarray) -> tuple[int, int]:
        """The bytes the grammar allows one at a time from here, written into ``out`` (uint8); returns
        (count, why the run ended: ``kernels.forced_bytes.FORCED_*``); ``next_allowed`` (bool [256]) gets the
        bytes allowed after them. Does not move the matcher. ~1-2 us per forced byte."""
        if self._error or self._terminated:
            next_allowed[:] = False
            return 0, FORCED_DEAD
        arena = self._ff_arena
        if arena is None or self._ff_capacity < out.shape[0]:
            arena = self._ff_arena = allocate_forced_scratch(self.grammar.max_depth, out.shape[0])
            self._ff_capacity = out.shape[0]
        return forced_bytes(self.grammar.automaton_arrays, self._state, self._counter, self._stack, self._stack_len,
                            self.grammar.max_depth, arena, out, next_allowed)

    def accepts_bytes(self, data: np.ndarray) -> bool:
        """Whether ``data`` (uint8) may follow from here (as a prefix of the rest). Does not move the matcher."""
        if self._error or self._terminated or data.shape[0] == 0:
            return False
        stack = self._ff_stack
        stack[: self._stack_len] = self._stack[: self._stack_len]
        q, _, _ = advance_token_bytes(self.grammar.automaton_arrays, data, self._state, self._counter, stack,
                                      self._stack_len, self.grammar.max_depth, self._scratch)
        return q >= 0


class JsonGrammar:
    """The :class:`~realizar_ort.generation.logits.LogitProcessor` that keeps one sequence inside a grammar.

    ``process`` catches the matcher up on newly generated ids, fills its own preallocated bitmask and sets
    disallowed logits to ``-inf`` in place. After a disallowed token only stop tokens remain allowed.
    With a ``forcer`` (a :class:`~realizar_ort.grammar.forced.ForcedTokenizer`), ``forced_tokens`` says which
    tokens the grammar forces next (fast-forward), and ``healed_forced_tokens`` says so right after a sampled
    token, which it may replace (token healing at the run's start).
    """

    def __init__(self, grammar: CompiledGrammar, forcer: Any = None) -> None:
        self.grammar = grammar
        self.matcher = grammar.matcher()
        self._bitmask = allocate_token_bitmask(grammar.vocab.vocab_size)
        self._seen = 0
        self.fast_forward = forcer.fast_forward(self.matcher) if forcer is not None else None

    def _catch_up(self, generated_ids: Sequence[int]) -> None:
        n = len(generated_ids)
        if n < self._seen:  # the caller rolled the sequence back
            self.matcher.rollback(min(self._seen - n, self.matcher.num_accepted))
            self._seen = n
        for i in range(self._seen, n):
            if not self.matcher.advance(generated_ids[i]):
                break
        self._seen = n

    def forced_tokens(self, generated_ids: Sequence[int], limit: int) -> list[int]:
        """The tokens the grammar forces after ``generated_ids`` (at most ``limit``; none without a forcer)."""
        self._catch_up(generated_ids)
        ff = self.fast_forward
        if ff is None:
            return []
        return ff.first(limit) if self.matcher.num_accepted == 0 else ff.tokens(limit)

    def healed_forced_tokens(self, generated_ids: Sequence[int], limit: int) -> tuple[int, list[int]]:
        """``forced_tokens`` right after a sampled token (the last of ``generated_ids``), with token healing
        at the run's start (``FastForward.healed``): ``(drop, tokens)``, where the caller drops the last
        ``drop`` (0 or 1) generated tokens and appends ``tokens`` (at most ``limit`` more than it drops)."""
        self._catch_up(generated_ids)
        ff = self.fast_forward
        if ff is None or not generated_ids or self.matcher.num_accepted == 0 or self.matcher.is_error:
            return 0, ff.tokens(limit) if ff is not None else []
        drop, tokens = ff.healed(int(generated_ids[-1]), limit)
        if drop:  # the matcher goes back to before the replaced token; catching up feeds the new ones
            self.matcher.rollback(1)
            self._seen -= 1
        return drop, tokens

    def process(self, generated_ids: Sequence[int], logits: np.ndarray) -> None:
        self._catch_up(generated_ids)
        self.matcher.fill_next_token_bitmask(self._bitmask)
        vocab = self.grammar.vocab.vocab_size
        if logits.shape[-1] > vocab:
            logits[vocab:] = -np.inf
            logits = logits[:vocab]
        apply_token_bitmask_inplace(logits, self._bitmask)

    @property
    def is_error(self) -> bool:
        return self.matcher.is_error


_compile_cache: OrderedDict[tuple, CompiledGrammar] = OrderedDict()
_compile_lock = threading.Lock()
COMPILE_CACHE_ENTRIES = 64


def compile_json_schema(schema: dict | bool | str, vocab: TokenVocabulary, *, whitespace: int = 0,
                        max_depth: int = DEFAULT_MAX_DEPTH, deadline_s: float = 5.0,
                        strict: bool = False) -> CompiledGrammar:
    """Compile a JSON Schema (or ``"any_json"`` / ``"any_object"``) for ``vocab``. LRU-cached.

    ``whitespace``: max whitespace bytes at each structural point (0 = compact JSON). ``max_depth``: the
    deepest recursion (nesting of generic JSON / recursive ``$ref``) a value may reach. ``strict``: OpenAI's
    strict mode, where ``additionalProperties`` absent means ``false`` on objects that list ``properties``
    (otherwise absent means allowed, as JSON Schema says). ``deadline_s``: the compile budget; past it
    :class:`GrammarTooLargeError`.
    Raises :class:`UnsupportedSchemaError` (names the keyword), :class:`GrammarError` otherwise.
    """
    if not isinstance(schema, (dict, bool, str)):
        raise GrammarError(f"schema must be a dict, a bool, 'any_json' or 'any_object', got {type(schema).__name__}")
    try:
        text = json.dumps(schema, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise GrammarError(f"schema is not JSON-serialisable: {exc}") from exc
    except RecursionError:
        raise GrammarTooLargeError("schema is nested too deeply to compile") from None
    key = (text, vocab.cache_key, whitespace, max_depth, strict)
    with _compile_lock:
        hit = _compile_cache.get(key)
        if hit is not None:
            _compile_cache.move_to_end(key)
            return hit
    if isinstance(schema, dict):
        check_schema_shape(schema)
    try:  # typed errors at the public entry for what the compiler's own checks do not catch yet
        automaton = compile_schema_automaton(schema, whitespace=whitespace, deadline_s=deadline_s, strict=strict)
    except RecursionError:
        raise GrammarTooLargeError("schema is nested too deeply to compile") from None
    except UnicodeError as exc:
        raise GrammarError(f"schema text is not valid Unicode (a lone surrogate?): {exc}") from None
    except (TypeError, AttributeError, KeyError, IndexError) as exc:  # a malformed schema the shape check missed
        raise GrammarError(f"schema could not be compiled ({type(exc).__name__}: {exc})") from None
    grammar = CompiledGrammar(automaton, vocab, max_depth)
    with _compile_lock:
        _compile_cache[key] = grammar
        while len(_compile_cache) > COMPILE_CACHE_ENTRIES:
            _compile_cache.popitem(last=False)
    return grammar
