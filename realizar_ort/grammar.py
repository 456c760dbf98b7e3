"""Grammar-constrained decoding for JSON: compile once per (schema, tokenizer), one cheap matcher per request.

    vocab = TokenVocabulary.from_tokenizer_file(path, vocab_size=128256, stop_token_ids=(128009,))
    grammar = compile_json_schema({"type": "object", ...}, vocab)   # LRU-cached, immutable
    matcher = grammar.matcher()                                    # per request
    matcher.fill_next_token_bitmask(bitmask)                       # bit set = allowed
    matcher.advance(token_id)                                      # False + error state if disallowed

Error contract (as llguidance): API misuse raises; a disallowed token from the model does not raise, it
puts the matcher in an error state where only stop tokens are allowed, so the sequence ends.

Masks: a compiled grammar keeps a bounded cache (``MASK_CACHE_ENTRIES``, first come) of masks keyed by
(automaton state, string-length slack that can matter, the top of the stack the mask depended on), shared
by its matchers; a hit costs one 16 KB copy (~2 us at 128k tokens; string states OR in precomputed rows of
"plain" tokens by remaining length). A miss runs the numba trie walk
(:mod:`realizar_ort.kernels.token_mask`, ~5-30 us typically, up to ~0.6 ms for a regex character-class
loop such as an email's local part on its first visit). Matchers are not thread-safe; different matchers
of one grammar may run in different threads (the kernel releases the GIL).

Memory: up to 8 MB of cached masks per grammar at 128k vocab; ``compile_json_schema`` keeps 64 grammars.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from .grammar_vocab import VocabTables, build_vocab_tables, load_vocab_tables
from .json_schema import (
    Automaton,
    GrammarError,
    GrammarTooLargeError,
    UnsupportedSchemaError,
    compile_schema_automaton,
)
from .kernels.token_mask import (
    advance_token_bytes,
    allocate_scratch,
    allocate_token_bitmask,
    apply_token_bitmask_inplace,
    fill_next_token_bitmask,
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
MASK_CACHE_ENTRIES = 512  # per grammar; 16 KB each at 128k vocab (8 MB)


class TokenVocabulary:
    """The bytes of every token of one tokenizer, cut to a model's logits width, plus its stop tokens.

    Immutable and shareable across threads. Ids ``>= vocab_size`` are never allowed; special/added tokens
    are never allowed inside JSON; ``stop_token_ids`` are allowed exactly when the value is complete.
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
        self.vocab_arrays = (*tables.trie.arrays, *tables.rest_trie.arrays, tables.plain_upto,
                             *tables.close_trie.arrays, tables.open_upto,
                             np.diff(tables.token_offsets).astype(np.int32))

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

    def __init__(self, automaton: Automaton, vocab: TokenVocabulary, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.automaton = automaton
        self.vocab = vocab
        self.max_depth = max_depth
        self.automaton_arrays = (*automaton.arrays, automaton.plain_loop, automaton.loop_bits, automaton.free_string)
        # string-length slack beyond what one token can use does not change a walk (see VocabTables)
        t = vocab.tables
        self._slack_cap = np.where(automaton.free_string, t.close_max_chars + 1,
                                   np.where(automaton.plain_loop, t.rest_max_chars + 1, t.max_token_bytes + 1))
        self._plain_upto = t.plain_upto
        self._open_upto = t.open_upto
        self._free_l = automaton.free_string.tolist()
        # per-state facts as Python lists: the mask hit path reads them without numpy scalar overhead
        self._final_l = automaton.final.tolist()
        self._plain_l = automaton.plain_loop.tolist()
        self._counted_l = automaton.counted.tolist()
        self._cmin_l = automaton.cmin.tolist()
        self._cmax_l = automaton.cmax.tolist()
        self._cap_l = self._slack_cap.tolist()
        self._cache_depth = [0] * automaton.num_states
        self._masks: dict[tuple, np.ndarray] = {}
        self._words = (vocab.vocab_size + 31) // 32

    def matcher(self) -> GrammarMatcher:
        """A fresh matcher at the start of the value. Cheap (a few small arrays)."""
        return GrammarMatcher(self)

    @property
    def num_states(self) -> int:
        return self.automaton.num_states

    def _mask_key(self, q: int, counter: int, stack: np.ndarray, stack_len: int, depth: int) -> tuple:
        """(state, string-length slack that can matter, the stack top the mask depended on)."""
        if self._counted_l[q]:
            cap = self._cap_l[q]
            slack = (min(max(self._cmin_l[q] - counter, 0), cap), min(self._cmax_l[q] - counter, cap))
        else:
            slack = None
        if depth == 0 or stack_len == 0:
            return (q, slack, stack_len if depth > stack_len else -1)
        return (q, slack, stack[max(0, stack_len - depth):stack_len].tobytes(), depth > stack_len)


class GrammarMatcher:
    """Per-request cursor over a :class:`CompiledGrammar`. Not thread-safe; cheap to create."""

    def __init__(self, grammar: CompiledGrammar) -> None:
        self.grammar = grammar
        self._vocab = grammar.vocab
        self._stack = np.zeros(grammar.max_depth, dtype=np.int32)
        self._scratch = allocate_scratch(grammar.max_depth, grammar.vocab.tables.max_token_bytes)
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

    # -- masks
    def fill_next_token_bitmask(self, bitmask: np.ndarray) -> None:
        """Write the allowed next tokens into ``bitmask`` (int32, >= ceil(vocab/32) words)."""
        g = self.grammar
        words = g._words
        if bitmask.dtype != np.int32 or bitmask.ndim != 1 or bitmask.shape[0] < words:
            raise ValueError(f"bitmask must be 1-D int32 with >= {words} words, got {bitmask.dtype} {bitmask.shape}")
        out = bitmask[:words]
        if self._error or self._terminated:
            out[:] = 0
            self._set_stops(out, True)
            return
        q = self._state
        plain = g._plain_l[q]
        depth = g._cache_depth[q]
        key = g._mask_key(q, self._counter, self._stack, self._stack_len, depth)
        cached = g._masks.get(key)
        if cached is not None:
            if not plain:
                np.copyto(out, cached)
        else:
            # in a string state the cached part is the walk of the non-plain tokens only
            read = fill_next_token_bitmask(self._vocab.vocab_arrays, g.automaton_arrays, q, self._counter,
                                           self._stack, self._stack_len, g.max_depth, self._scratch, out,
                                           not plain)
            if read > depth:
                g._cache_depth[q] = read
                key = g._mask_key(q, self._counter, self._stack, self._stack_len, read)
            if len(g._masks) < MASK_CACHE_ENTRIES:
                g._masks[key] = cached = out.copy()
        if plain:  # OR in the plain (and, in a free string, open) tokens that fit the room left
            room = g._cmax_l[q] - self._counter
            rows = g._plain_upto
            np.bitwise_or(cached if cached is not None else out, rows[min(room, rows.shape[0] - 1)], out=out)
            if g._free_l[q]:
                rows = g._open_upto
                np.bitwise_or(out, rows[min(room, rows.shape[0] - 1)], out=out)
        if self._vocab._stop_bits:
            self._set_stops(out, self._stack_len == 0 and g._final_l[q])

    def _set_stops(self, out: np.ndarray, allowed: bool) -> None:
        bits = out.view(np.uint32)
        for word, bit, clear in self._vocab._stop_bits:
            if allowed:
                bits[word] |= bit
            else:
                bits[word] &= clear

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


class JsonGrammar:
    """The :class:`~realizar_ort.logits.LogitProcessor` that keeps one sequence inside a grammar.

    ``process`` catches the matcher up on newly generated ids, fills its own preallocated bitmask and sets
    disallowed logits to ``-inf`` in place. After a disallowed token only stop tokens remain allowed.
    """

    def __init__(self, grammar: CompiledGrammar) -> None:
        self.grammar = grammar
        self.matcher = grammar.matcher()
        self._bitmask = allocate_token_bitmask(grammar.vocab.vocab_size)
        self._seen = 0

    def process(self, generated_ids: Sequence[int], logits: np.ndarray) -> None:
        n = len(generated_ids)
        if n < self._seen:  # the caller rolled the sequence back
            self.matcher.rollback(min(self._seen - n, self.matcher.num_accepted))
            self._seen = n
        for i in range(self._seen, n):
            if not self.matcher.advance(generated_ids[i]):
                break
        self._seen = n
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
                        max_depth: int = DEFAULT_MAX_DEPTH, deadline_s: float = 5.0) -> CompiledGrammar:
    """Compile a JSON Schema (or ``"any_json"`` / ``"any_object"``) for ``vocab``. LRU-cached.

    ``whitespace``: max whitespace bytes at each structural point (0 = compact JSON). ``max_depth``: the
    deepest recursion (nesting of generic JSON / recursive ``$ref``) a value may reach.
    Raises :class:`UnsupportedSchemaError` (names the keyword), :class:`GrammarError` otherwise.
    """
    if not isinstance(schema, (dict, bool, str)):
        raise GrammarError(f"schema must be a dict, a bool, 'any_json' or 'any_object', got {type(schema).__name__}")
    try:
        text = json.dumps(schema, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise GrammarError(f"schema is not JSON-serialisable: {exc}") from exc
    key = (text, vocab.cache_key, whitespace, max_depth)
    with _compile_lock:
        hit = _compile_cache.get(key)
        if hit is not None:
            _compile_cache.move_to_end(key)
            return hit
    automaton = compile_schema_automaton(schema, whitespace=whitespace, deadline_s=deadline_s)
    grammar = CompiledGrammar(automaton, vocab, max_depth)
    with _compile_lock:
        _compile_cache[key] = grammar
        while len(_compile_cache) > COMPILE_CACHE_ENTRIES:
            _compile_cache.popitem(last=False)
    return grammar
