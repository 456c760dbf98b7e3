"""Fast-forward: the bytes a grammar forces, as the tokens the tokenizer itself would write for them.

Where a grammar allows exactly one next byte, again and again (a key, its quotes and colon, a tool's
name), those bytes need no sampling: they can be appended at once and fed to the model in one pass.
Turning them into tokens is the delicate part (llguidance's ``docs/fast_forward.md``):

1. the forced bytes are tokenized by the model's own tokenizer (canonical tokenization: never a split the
   model did not see in training), and the tokens must spell exactly those bytes;
2. "token healing" at the end: if some vocabulary token starting inside the forced bytes runs past their
   end and the grammar allows it there (``":`` after a key's closing ``"``, say), the tokens from that
   point on are held back, so the model itself picks how to cross into the free part;
3. what is kept is tokenized again on its own and must come out the same (else a token more is dropped);
4. the run's start, right after a sampled token (``FastForward.healed``), one of two ways
   (``ForcedTokenizer(healing=...)``):
   - model-led (the default): the model picks the run's first token itself, under the grammar's mask (one
     step), and the rest of the run is forced from there. Where forced bytes begin after a sampled token,
     the split there is the model's choice: SmolLM2 writes ``",`` ``"`` where the tokenizer writes ``","``,
     ``{`` ``"`` for ``{"``, ``":`` ``"`` for ``":"`` (compact JSON, where it would put a space). Forcing
     the tokenizer's merge there puts it in a context it would never have written: greedy json_schema
     answers then repeated array items until max_tokens (1/16 finished against 12/16 with fast-forward
     off; 10/16 with the model picking every run's start, the answer's first included: ``first``). Costs
     one step per run;
   - token healing: its bytes and the forced bytes are tokenized together (the same hold-back, grammar
     checks from before that token); when the tokenizer's first token is not the sampled one (``t`` +
     ``ags":`` is ``tags`` ``":``), the run replaces it. One token back at most, never a forced or prompt
     token (the caller's promise); a sampled token that ends a character begun before it is never replaced
     (its bytes are not text on their own). Every boundary is then the tokenizer's own, at the cost above.

A forced run that ends the value (nothing but a stop token may follow) keeps all its tokens and, when the
vocabulary has a single stop token, that too.

Costs: per forced run, the byte walk (~1-2 us per byte), one ``encode`` of the forced text (~10-30 us), one
or two binary searches per held-back candidate position, and a grammar check per spanning candidate: 0.1-0.6
ms a run on the Llama 3 vocabulary, and ~10 us per call where nothing is forced. What is forced depends only
on the matcher's configuration (``GrammarMatcher.configuration``), so the answer is kept per compiled grammar
and configuration (``FORCED_CACHE_ENTRIES`` at most each): the same schema's keys, in later answers or
later array items, cost one dict lookup. The sorted token index (``TokenIndex``) is built once per
vocabulary (~0.1 s at 128k tokens) and shared.
Threading: a ``ForcedTokenizer`` is shared (its answer cache is filled by whichever thread asks; dict reads
and writes are atomic); a ``FastForward`` belongs to one request.
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections.abc import Sequence

import numpy as np

from ..kernels.forced_bytes import FORCED_FULL, FORCED_STOP
from ..tokenizer import Tokenizer
from .matcher import GrammarMatcher, TokenVocabulary

__all__ = ["FORCED_BYTES_LIMIT", "FORCED_CACHE_ENTRIES", "FastForward", "ForcedTokenizer", "TokenIndex"]

FORCED_BYTES_LIMIT = 512  # bytes forced per run at most (the rest is forced by the next run)
FORCED_CACHE_ENTRIES = 4096  # forced-token answers kept per compiled grammar (configurations met so far)
_NO_LIMIT = 1 << 30


class TokenIndex:
    """Every token with bytes, sorted by its bytes: the tokens that start with a given byte string are one
    contiguous range (two binary searches). Immutable."""

    _cache: weakref.WeakKeyDictionary[TokenVocabulary, TokenIndex] = weakref.WeakKeyDictionary()
    _lock = threading.Lock()

    def __init__(self, vocab: TokenVocabulary) -> None:
        pairs = sorted((vocab.token_bytes(i), i) for i in range(vocab.vocab_size))
        pairs = [(b, i) for b, i in pairs if b]
        self.keys = [b for b, _ in pairs]
        self.ids = [i for _, i in pairs]
        self.max_len = max((len(b) for b in self.keys), default=0)

    @classmethod
    def of(cls, vocab: TokenVocabulary) -> TokenIndex:
        with cls._lock:
            index = cls._cache.get(vocab)
        if index is None:
            index = cls(vocab)
            with cls._lock:
                index = cls._cache.setdefault(vocab, index)
        return index

    def starting_with(self, prefix: bytes) -> tuple[int, int]:
        """The range ``[lo, hi)`` of ``keys`` that start with ``prefix`` (non-empty)."""
        lo = bisect.bisect_left(self.keys, prefix)
        hi = bisect.bisect_left(self.keys, _after_prefix(prefix), lo)
        return lo, hi


def _after_prefix(prefix: bytes) -> bytes:
    """The smallest byte string greater than every string that starts with ``prefix``."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return b"\xff" * (len(prefix) + 1) + b"\xff"
    p[-1] += 1
    return bytes(p)


class ForcedTokenizer:
    """Forced bytes -> canonical forced tokens, for one vocabulary and the tokenizer it came from.

    ``tokenizer``: the :class:`~realizar_ort.tokenizer.Tokenizer` the vocabulary came from (its ``encode``
    and ``pretoken_ends``). ``healing``: how a run starts right after a sampled token (the module
    docstring, point 4): False, the model picks its first token; True, token healing. Shared read-only by
    every request of that vocabulary."""

    def __init__(self, vocab: TokenVocabulary, tokenizer: Tokenizer, healing: bool = False) -> None:
        self.vocab = vocab
        self.tokenizer = tokenizer
        self.healing = healing
        self.encode = tokenizer.encode
        self.index = TokenIndex.of(vocab)
        stops = vocab.stop_token_ids.tolist()
        self.stop_id: int | None = stops[0] if len(stops) == 1 else None  # forced only when unambiguous
        self._answers: weakref.WeakKeyDictionary[object, dict] = weakref.WeakKeyDictionary()  # grammar -> {configuration: tokens}
        self._answers_lock = threading.Lock()

    def answers(self, grammar: object) -> dict:
        """The forced tokens already worked out for ``grammar`` (a compiled grammar), by configuration."""
        cache = self._answers.get(grammar)
        if cache is None:
            with self._answers_lock:
                cache = self._answers.setdefault(grammar, {})
        return cache

    def fast_forward(self, matcher: GrammarMatcher) -> FastForward:
        """A per-request :class:`FastForward` over ``matcher``."""
        return FastForward(self, matcher)

    def spell(self, ids: Sequence[int]) -> bytes | None:
        """The bytes of ``ids``, or None when one is out of range or has none (a special token)."""
        out = []
        for i in ids:
            if not 0 <= i < self.vocab.vocab_size:
                return None
            b = self.vocab.token_bytes(i)
            if not b:
                return None
            out.append(b)
        return b"".join(out)

    def canonical(self, data: bytes) -> list[int] | None:
        """The tokenizer's tokens for ``data`` if they spell exactly ``data`` (None otherwise, e.g. an
        incomplete UTF-8 character or text the tokenizer would turn into a special token)."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        ids = list(self.encode(text))
        return ids if ids and self.spell(ids) == data else None

    def tokens(self, matcher: GrammarMatcher, forced: bytes, why: int, next_allowed: np.ndarray,
               limit: int) -> list[int]:
        """The forced tokens for ``forced`` (the bytes ``matcher`` forces from its state, which ended for
        reason ``why`` with ``next_allowed`` next), at most ``limit`` of them."""
        if limit <= 0:
            return []
        data = forced
        complete = why == FORCED_STOP
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:  # an incomplete character at the end: forced only up to it
            if exc.start == 0 or exc.end != len(data):
                return []
            data, complete = data[: exc.start], False
            next_allowed = np.zeros(256, dtype=bool)
            next_allowed[forced[exc.start]] = True
        ids = self.canonical(data) if data else None
        if not ids:
            return [self.stop_id] if complete and not data and self.stop_id is not None else []
        if complete:  # nothing but a stop token can follow: no token can span the end
            if self.stop_id is not None:
                ids.append(self.stop_id)
            return ids[:limit]
        cut = min(self._pretoken_cut(data, next_allowed),
                  self._healing_cut(matcher, data, next_allowed, full=why == FORCED_FULL))
        kept, end = [], 0
        for i in ids:
            end += len(self.vocab.token_bytes(i))
            if end > cut:
                break
            kept.append(i)
        kept = kept[:limit]
        while kept and self.canonical(self.spell(kept) or b"") != kept:  # the kept part on its own
            kept.pop()
        return kept

    def _pretoken_cut(self, data: bytes, next_allowed: np.ndarray) -> int:
        """The last pre-tokenizer boundary of ``data`` that stays a boundary whatever character may follow
        (``len(data)`` if the end always is one): the tokenizer splits text into pieces first and never
        merges across them, but a piece the continuation joins can be tokenized differently as a whole
        (``}]}`` alone is ``}`` ``]}``; ``}]},`` begins with ``}]}``)."""
        text = data.decode("utf-8")
        chars = len(text)
        cut = chars
        for rep in _representatives(next_allowed):
            ends = self.tokenizer.pretoken_ends(text + rep)
            cut = min(cut, max((e for e in ends if e <= chars), default=0))
            if cut == 0:
                break
        return cut if cut == chars else len(text[:cut].encode("utf-8"))

    def _healing_cut(self, matcher: GrammarMatcher, data: bytes, next_allowed: np.ndarray, full: bool) -> int:
        """The first position of ``data`` where a token the grammar allows starts and runs past the end
        (``len(data)`` if none): tokens reaching past it are left for the model to choose."""
        index = self.index
        allowed = np.flatnonzero(next_allowed).tolist()
        n = len(data)
        for start in range(max(0, n - index.max_len + 1), n):
            tail = data[start:]
            lo, hi = index.starting_with(tail)
            if hi - lo <= (1 if index.keys[lo:lo + 1] == [tail] else 0):
                continue  # no token is longer than the tail and starts with it
            for byte in allowed:
                clo, chi = index.starting_with(tail + bytes((byte,)))
                for k in range(clo, chi):
                    token = index.keys[k]
                    if full or matcher.accepts_bytes(np.frombuffer(data[:start] + token, dtype=np.uint8)):
                        return start
        return n


def _representatives(next_allowed: np.ndarray) -> list[str]:
    """One character per kind the pre-tokenizers tell apart, for each allowed next byte: ASCII letters by
    case, digits, and every other ASCII character as itself; a non-ASCII start byte as a letter and a
    symbol."""
    reps: dict[str, None] = {}
    for b in np.flatnonzero(next_allowed).tolist():
        if b >= 0x80:
            if b >= 0xC2:
                reps["é"] = reps["€"] = None
        elif 0x61 <= b <= 0x7A:
            reps["a"] = None
        elif 0x41 <= b <= 0x5A:
            reps["A"] = None
        elif 0x30 <= b <= 0x39:
            reps["0"] = None
        else:
            reps[chr(b)] = None
    return list(reps)


class FastForward:
    """One request's fast-forward over its matcher: ``tokens()`` says what is forced from here.

    Holds the byte scratch (allocated once)."""

    def __init__(self, forcer: ForcedTokenizer, matcher: GrammarMatcher, max_bytes: int = FORCED_BYTES_LIMIT) -> None:
        self.forcer = forcer
        self.matcher = matcher
        self._out = np.zeros(max_bytes, dtype=np.uint8)
        self._next = np.zeros(256, dtype=bool)
        self._deferred_at = -1  # model-led starts: the matcher's token count where a run was left to the model

    def tokens(self, limit: int) -> list[int]:
        """The tokens forced from the matcher's state (it does not move), at most ``limit``."""
        if limit <= 0:
            return []
        key = self.matcher.configuration()
        answers = self.forcer.answers(self.matcher.grammar) if key is not None else None
        if answers is not None:
            known = answers.get(key)
            if known is not None and len(known) <= limit:
                return list(known)
        found = self._work_out(_NO_LIMIT if answers is not None else limit)
        if answers is not None and len(answers) < FORCED_CACHE_ENTRIES:
            answers[key] = tuple(found)
        return found if len(found) <= limit else self._work_out(limit)

    def healed(self, last_token: int, limit: int) -> tuple[int, list[int]]:
        """The forced run right after a sampled token, ``last_token`` (the token the matcher accepted last;
        the caller's promise: never a forced or prompt token). Without ``forcer.healing``: see
        ``_model_led``. With it, token healing at the run's start. Returns ``(drop, tokens)``: drop
        the last ``drop`` tokens (0 or 1: ``last_token``) and append ``tokens`` (at most ``limit`` more than
        were dropped). The forced bytes are tokenized together with ``last_token``'s bytes, with the same
        end-boundary hold-back as ``tokens`` (the grammar checks run from before ``last_token``): when the
        tokenizer's first token there is not ``last_token`` (sampled ``t`` + forced ``ags":`` is ``tags``
        ``":``) and they reach past its bytes, ``last_token`` is replaced by them; when it is, the tokens
        after it are taken. Otherwise (nothing forced, nothing kept past ``last_token``): as ``tokens``.
        The matcher does not move (it is rolled back and forward again on a first computation); answers
        are kept per (configuration before ``last_token``, ``last_token``)."""
        if limit <= 0:
            return 0, []
        if not self.forcer.healing:
            return 0, self._model_led(limit)
        plain = self.tokens(limit)
        key = self.matcher.previous_configuration() if plain else None
        if key is None:
            return 0, plain
        answers = self.forcer.answers(self.matcher.grammar)
        known = answers.get((key, last_token))
        if known is None:
            known = self._heal(last_token, _NO_LIMIT)
            if len(answers) < FORCED_CACHE_ENTRIES:
                answers[(key, last_token)] = known
        if len(known[1]) > limit + known[0]:  # longer than allowed: worked out again with the limit
            known = self._heal(last_token, limit + 1)
        drop, ids = known
        return (drop, list(ids)) if ids else (0, plain)

    def first(self, limit: int) -> list[int]:
        """The run forced before the model wrote anything (``tokens``, at the answer's start). Model-led
        (without ``forcer.healing``) the model picks its first token too, from the prompt's logits (the rest
        is then fed with the next pass, not with the prompt): 10 of 16 greedy SmolLM2 json answers finished
        so, against 8 with the run prefilled with the prompt."""
        if self.forcer.healing:
            return self.tokens(limit)
        return self._defer(self.tokens(limit))

    def _model_led(self, limit: int) -> list[int]:
        """Model-led run starts: where a run would start right after a sampled token, nothing is forced yet
        (the model picks the run's first token under the mask); after that pick, the rest is forced."""
        run = self.tokens(limit)
        if self._deferred_at == self.matcher.num_accepted - 1:  # the token just sampled: the model's pick
            self._deferred_at = -1
            return run
        return self._defer(run)

    def _defer(self, run: list[int]) -> list[int]:
        """Leave ``run``'s first token to the model (returns nothing), unless nothing is forced or the run is
        a stop token alone (the value is complete: nothing to pick)."""
        if not run or self.forcer.spell(run[:1]) is None:
            return run
        self._deferred_at = self.matcher.num_accepted
        return []

    def _heal(self, last_token: int, limit: int) -> tuple[int, tuple[int, ...]]:
        """(1, tokens replacing ``last_token``), (0, tokens after it) or (0, ()) (no joint answer)."""
        vocab = self.forcer.vocab
        head = vocab.token_bytes(last_token) if 0 <= last_token < vocab.vocab_size else b""
        if not head or limit <= 1:
            return 0, ()
        n, why = self.matcher.forced_bytes(self._out, self._next)
        forced = self._out[:n].tobytes()
        self.matcher.rollback(1)
        try:
            ids = self.forcer.tokens(self.matcher, head + forced, why, self._next, limit)
        finally:
            self.matcher.advance(last_token)
        reach = sum(len(vocab.token_bytes(i)) for i in ids)  # a stop token has no bytes
        if reach <= len(head):  # nothing kept past the sampled token's bytes
            return 0, ()
        if ids[0] == last_token:
            return 0, tuple(ids[1:])
        return 1, tuple(ids)

    def _work_out(self, limit: int) -> list[int]:
        n, why = self.matcher.forced_bytes(self._out, self._next)
        if n == 0 and why != FORCED_STOP:
            return []
        return self.forcer.tokens(self.matcher, self._out[:n].tobytes(), why, self._next, limit)
