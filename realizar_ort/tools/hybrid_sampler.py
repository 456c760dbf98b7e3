"""`HybridSampler`: free text until the model starts a tool call, then the call grammar from that byte on.

A `LogitProcessor` for one request. Its phases, driven only by the tokens the request has generated:

- ``start`` (the reply's first token). With ``tool_choice="auto"`` the model may write text or open a
  call. Allowed: every token that does not begin a call, the opening special token (Llama 3's
  ``<|python_tag|>``), and those tokens beginning with ``{`` that the call grammar accepts as its first
  token. The probability of opening a call is kept: the mass of the ``{`` tokens the grammar refuses
  (say ``{\\n`` under a compact grammar) is moved onto the ones it accepts, in proportion, so the model
  calls a tool exactly as often as it wanted to, and every call it starts is valid.
  ``"required"``/a named tool: only a call may start: the opening token or the grammar's first token
  (the pooled ``{`` mass, as above), so a Llama 3 model chooses ``<|python_tag|>{...}`` or a bare
  ``{"name": ...}`` as it would unconstrained; the grammar takes over from the first token of either.
  ``"none"``: call openings are masked.
- ``free``: text. Unmasked, except that ``"none"`` keeps masking the opening token; seeing the opening
  token (``"auto"``) moves to ``call``.
- ``call``: the JSON grammar of the union of the tools' call bodies masks every step.
- ``either`` (a response format, ``answer``, next to ``"auto"``): there is no free text. The first token
  is the opening token (then ``call``) or a token that begins a call body or the formatted answer; while
  both are still possible, a matcher of each runs in lockstep and the mask is the union of their masks
  (the language "a call or the answer", without asking the grammar compiler to merge two schemas); when
  one dies the other goes on as ``call``. Under ``"none"`` the answer's grammar masks from the first token.
- ``between`` (the call, or the array of parallel calls, is complete), ``done``, ``error``: only the stop
  tokens (the processor contract: never raise on model output).

Fast-forward (with a ``forcer``, a :class:`~realizar_ort.grammar.forced.ForcedTokenizer`):
``forced_tokens`` gives the opening token where only it may come, then what the call grammar forces from
there (the tokenizer's own tokens for those bytes), and a lone stop token where only it may come;
``healed_forced_tokens``, right after a sampled token inside a call, may replace that token with the
tokenizer's own tokens for its bytes and the forced ones (token healing at the run's start).

Costs per step: ``free`` nothing; ``call`` one grammar mask fill plus one bitmask apply; ``start`` a
few index operations over the (hundreds of) ``{`` tokens. Per request: one fresh-matcher mask to learn
the grammar's first tokens. The vocabulary tables (`CallTokenTables`) are built once per tokenizer and
call format (a pass over the vocabulary) and shared read-only. A `HybridSampler` belongs to one request
and is used by the engine's scheduler thread only.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

from ..kernels import allocate_token_bitmask, apply_token_bitmask_inplace
from .prompts import CallFormat

__all__ = ["CallTokenTables", "HybridSampler", "call_token_tables"]

Mode = Literal["auto", "required", "none"]
Phase = Literal["start", "free", "force_opening", "call", "either", "between", "done", "error"]


class _Matcher(Protocol):
    def fill_next_token_bitmask(self, bitmask: np.ndarray) -> Any: ...
    def advance(self, token_id: int) -> bool: ...
    def is_accepting(self) -> bool: ...
    def rollback(self, n: int) -> None: ...
    @property
    def num_accepted(self) -> int: ...


class _Grammar(Protocol):
    def matcher(self) -> _Matcher: ...


@dataclass(frozen=True)
class CallTokenTables:
    """Token ids that matter for spotting a call, for one tokenizer, model vocabulary and call format."""

    vocab_size: int  # the model's logits width
    brace_ids: np.ndarray  # int64: tokens whose bytes start with "{" (a call when first in the reply)
    bracket_ids: np.ndarray  # int64: tokens whose bytes start with "[" (parallel calls, where an array)
    opening_id: int | None  # the special token that opens a call anywhere, if the format has one
    stop_ids: np.ndarray  # int64: tokens that may end the turn after a call

    def start_ids(self, parallel: bool) -> np.ndarray:
        """Tokens that open a call when they start the reply."""
        return np.union1d(self.brace_ids, self.bracket_ids) if parallel else self.brace_ids


_tables_cache: weakref.WeakKeyDictionary[Any, dict[tuple, CallTokenTables]] = weakref.WeakKeyDictionary()
_tables_lock = threading.Lock()


def call_token_tables(tokenizer: Any, vocab_size: int, call_format: CallFormat) -> CallTokenTables:
    """Build (or fetch from cache) the tables for `tokenizer` (realizar_ort.tokenizer.Tokenizer).

    Raises ValueError when a special token the format needs is not in the tokenizer or beyond the
    model's vocabulary."""
    key = (vocab_size, call_format)
    with _tables_lock:
        cached = _tables_cache.get(tokenizer, {}).get(key)
    if cached is not None:
        return cached
    limit = min(vocab_size, tokenizer.vocab_size)
    special = getattr(tokenizer, "special_ids", frozenset())
    brace = [i for i in range(limit) if i not in special and tokenizer.token_bytes(i).startswith(b"{")]
    bracket = [i for i in range(limit) if i not in special and tokenizer.token_bytes(i).startswith(b"[")]

    def special_id(text: str) -> int:
        token = tokenizer.token_id(text)
        if token is None or token >= vocab_size:
            raise ValueError(f"the tokenizer has no usable token {text!r} (needed by this tool call format)")
        return token

    opening = special_id(call_format.opening_token) if call_format.opening_token else None
    stops = np.array(sorted({special_id(t) for t in call_format.stop_tokens}), dtype=np.int64)
    tables = CallTokenTables(
        vocab_size, np.array(brace, dtype=np.int64), np.array(bracket, dtype=np.int64), opening, stops
    )
    with _tables_lock:
        _tables_cache.setdefault(tokenizer, {})[key] = tables
    return tables


def _allowed_ids(bitmask: np.ndarray, vocab_size: int) -> np.ndarray:
    bits = np.unpackbits(bitmask.view(np.uint8), bitorder="little")[:vocab_size]
    return np.flatnonzero(bits)


class HybridSampler:
    """The tool-calling `LogitProcessor` of one request (see the module docstring)."""

    def __init__(
        self,
        tables: CallTokenTables,
        grammar: _Grammar | None,
        mode: Mode,
        *,
        json_at_start: bool = True,
        parallel: bool = False,
        forcer: Any = None,
        answer: _Grammar | None = None,
    ) -> None:
        """`grammar`: the compiled JSON grammar of what follows the opening (one call body, or with
        `parallel` a body or an array of bodies); None only with ``mode="none"``. `parallel`: a reply
        starting with ``[`` opens (an array of) calls too. `answer`: the grammar of a response format
        given next to the tools; a reply that is not a call must match it (ignored under "required")."""
        if mode not in ("auto", "required", "none"):
            raise ValueError(f"mode must be 'auto', 'required' or 'none', got {mode!r}")
        if grammar is None and mode != "none":
            raise ValueError("a call grammar is needed unless mode is 'none'")
        if tables.opening_id is None and not json_at_start:
            raise ValueError("the call format has neither an opening token nor JSON at the start of the reply")
        self.tables = tables
        self.mode: Mode = mode
        self._start_ids = tables.start_ids(parallel) if json_at_start else np.empty(0, dtype=np.int64)
        self._grammar = grammar
        self._json_at_start = json_at_start
        self._matcher: _Matcher | None = None
        self._forcer = forcer
        self._fast_forward: Any = None  # the forcer's cursor over the current call's matcher
        self._seen = 0
        self._bitmask = allocate_token_bitmask(tables.vocab_size)
        self.phase: Phase = "start"
        self._start_ok = np.empty(0, dtype=np.int64)
        self._answer = answer if mode != "required" else None
        if self._answer is not None:
            self._start_with_answer()
            return
        if mode == "none":
            return
        if mode == "required" and not json_at_start:
            self.phase = "force_opening"
            return
        first = self._new_matcher_first_tokens()
        if mode == "required" and tables.opening_id is None:  # a JSON call from the first token
            self.phase = "call"
        else:  # which "{" / "[" tokens the grammar can start with (auto, or required with an opening token)
            self._start_ok = self._start_ids[np.isin(self._start_ids, first, assume_unique=True)]
            self._matcher = None  # a new one is made if a call starts

    def _start_with_answer(self) -> None:
        """Set up a reply under a response format: the answer's grammar from the start ("none"), or the
        first tokens of "a call or the answer" ("auto")."""
        assert self._answer is not None
        self._scratch = allocate_token_bitmask(self.tables.vocab_size)  # second mask of the `either` phase
        self._either: list[_Matcher] = []
        if self.mode == "none":
            self._start_call(self._answer)
            return
        answer_first = self._first_tokens(self._answer)
        call_first = self._first_tokens(self._grammar) if self._json_at_start else np.empty(0, dtype=np.int64)
        self._answer_first, self._call_first = answer_first, call_first
        self._start_ok = np.union1d(answer_first, call_first)
        opening = [] if self.tables.opening_id is None else [self.tables.opening_id]
        self._start_allowed = np.union1d(self._start_ok, np.array(opening, dtype=np.int64))

    def _first_tokens(self, grammar: _Grammar | None) -> np.ndarray:
        assert grammar is not None
        self._bitmask.fill(0)
        grammar.matcher().fill_next_token_bitmask(self._bitmask)
        return _allowed_ids(self._bitmask, self.tables.vocab_size)

    def _start_either(self, token: int) -> None:
        """The reply's first token begins a call body, the answer, or both: one matcher per candidate."""
        assert self._answer is not None and (self._grammar is not None or not self._call_first.size)
        candidates = []
        if np.any(self._call_first == token):
            candidates.append(self._grammar)
        if np.any(self._answer_first == token):
            candidates.append(self._answer)
        self._either = [g.matcher() for g in candidates if g is not None]
        self.phase = "either"
        self._feed_either(token)

    def _feed_either(self, token: int) -> None:
        self._either = [m for m in self._either if m.advance(token)]
        if not self._either:
            self.phase = "error"
        elif any(m.is_accepting() for m in self._either):
            self.phase = "between"
        elif len(self._either) == 1:
            self._matcher = self._either[0]
            self.phase = "call"

    def _new_matcher_first_tokens(self) -> np.ndarray:
        assert self._grammar is not None
        self._matcher = self._grammar.matcher()
        self._bitmask.fill(0)
        self._matcher.fill_next_token_bitmask(self._bitmask)
        return _allowed_ids(self._bitmask, self.tables.vocab_size)

    # ---- LogitProcessor ----------------------------------------------------------------------------
    def process(self, generated_ids: Sequence[int], logits: np.ndarray) -> None:
        self._catch_up(generated_ids)
        self._mask(logits)

    def _catch_up(self, generated_ids: Sequence[int]) -> None:
        for token in generated_ids[self._seen :]:
            self._advance(int(token))
        self._seen = max(self._seen, len(generated_ids))

    def forced_tokens(self, generated_ids: Sequence[int], limit: int) -> list[int]:
        """The tokens forced after ``generated_ids`` (at most ``limit``): the caller appends all of them."""
        if self._forcer is None:
            return []
        self._catch_up(generated_ids)
        out: list[int] = []
        if self.phase == "force_opening" and limit > 0:
            assert self.tables.opening_id is not None
            out.append(self.tables.opening_id)
            self._advance(self.tables.opening_id)  # counted as seen: the caller appends it
            self._seen += 1
        if self.phase == "call" and len(out) < limit:
            if self._fast_forward is None or self._fast_forward.matcher is not self._matcher:
                self._fast_forward = self._forcer.fast_forward(self._matcher)
            out += self._fast_forward.tokens(limit - len(out))
        elif self.phase in ("between", "done") and len(self.tables.stop_ids) == 1 and len(out) < limit:
            out.append(int(self.tables.stop_ids[0]))
        return out

    def healed_forced_tokens(self, generated_ids: Sequence[int], limit: int) -> tuple[int, list[int]]:
        """``forced_tokens`` right after a sampled token (the last of ``generated_ids``), with token healing
        at the run's start inside a call (see ``JsonGrammar.healed_forced_tokens``): ``(drop, tokens)``."""
        if self._forcer is None:
            return 0, []
        self._catch_up(generated_ids)
        matcher = self._matcher
        if self.phase != "call" or matcher is None or matcher.num_accepted == 0 or not generated_ids:
            return 0, self.forced_tokens(generated_ids, limit)  # the last token did not move this matcher
        if self._fast_forward is None or self._fast_forward.matcher is not matcher:
            self._fast_forward = self._forcer.fast_forward(matcher)
        drop, tokens = self._fast_forward.healed(int(generated_ids[-1]), limit)
        if drop:  # back to before the replaced token (still in the call); catching up feeds the new ones
            matcher.rollback(1)
            self._seen -= 1
        return drop, tokens

    # ---- phase changes ------------------------------------------------------------------------------
    def _start_call(self, grammar: _Grammar | None = None) -> None:
        grammar = grammar or self._grammar
        assert grammar is not None
        self._matcher = grammar.matcher()
        self.phase = "call"

    def _advance(self, token: int) -> None:
        t = self.tables
        phase = self.phase
        if phase == "start":
            if token == t.opening_id and self.mode != "none":
                self._start_call()
            elif self._answer is not None and np.any(self._start_ok == token):
                self._start_either(token)
            elif self.mode != "none" and self._start_ok.size and np.any(self._start_ok == token):
                self._start_call()
                self._feed(token)
            else:
                self.phase = "free"
        elif phase == "free":
            if token == t.opening_id and self.mode == "auto":
                self._start_call()
        elif phase == "force_opening":
            if token == t.opening_id:
                self._start_call()
            else:  # cannot happen under our own mask; another processor must have interfered
                self.phase = "error"
        elif phase == "call":
            self._feed(token)
        elif phase == "either":
            self._feed_either(token)
        elif phase == "between":
            self.phase = "done"

    def _feed(self, token: int) -> None:
        assert self._matcher is not None
        if not self._matcher.advance(token):
            self.phase = "error"
        elif self._matcher.is_accepting():
            self.phase = "between"

    # ---- masks --------------------------------------------------------------------------------------
    def _mask(self, logits: np.ndarray) -> None:
        t = self.tables
        phase = self.phase
        if phase == "start":
            if self.mode == "none":
                logits[self._start_ids] = -np.inf
                if t.opening_id is not None:
                    logits[t.opening_id] = -np.inf
            elif self._answer is not None:  # auto with a response format: a call or the answer, no text
                self._only(logits, self._start_allowed)
            else:
                best = self._pool_opening_mass(logits)
                if self.mode == "required":  # the opening token or the grammar's first token, nothing else
                    keep = [t.opening_id] if t.opening_id is not None else []
                    self._only(logits, np.array(keep + ([best] if best is not None else []), dtype=np.int64))
        elif phase == "free":
            if self.mode == "none" and t.opening_id is not None:
                logits[t.opening_id] = -np.inf
        elif phase == "force_opening":
            assert t.opening_id is not None
            self._only(logits, np.array([t.opening_id], dtype=np.int64))
        elif phase == "call":
            assert self._matcher is not None
            self._bitmask.fill(0)
            self._matcher.fill_next_token_bitmask(self._bitmask)
            apply_token_bitmask_inplace(logits, self._bitmask)
        elif phase == "either":  # the union of the live matchers' masks
            self._bitmask.fill(0)
            for matcher in self._either:
                self._scratch.fill(0)
                matcher.fill_next_token_bitmask(self._scratch)
                np.bitwise_or(self._bitmask, self._scratch, out=self._bitmask)
            apply_token_bitmask_inplace(logits, self._bitmask)
        else:  # between, done, error
            self._only(logits, t.stop_ids)

    def _pool_opening_mass(self, logits: np.ndarray) -> int | None:
        """Give the probability of every call-opening token ("{...", "[...") to the grammar's most likely
        first token, and return that token (None when there is none).

        The chance of opening a call is then the model's whole mass on such tokens (however it would have
        spelled the brace), so greedy decoding calls a tool exactly when a call is likelier than any single
        text token; the other opening tokens are refused (those the grammar cannot start with must be)."""
        starts = self._start_ids
        if starts.size == 0:
            return None
        if self._start_ok.size == 0:
            logits[starts] = -np.inf
            return None
        every = logits[starts].astype(np.float64)
        peak = every.max()
        best = int(self._start_ok[np.argmax(logits[self._start_ok])])
        logits[starts] = -np.inf
        if np.isfinite(peak):
            logits[best] = peak + np.log(np.exp(every - peak).sum())
        return best

    @staticmethod
    def _only(logits: np.ndarray, ids: np.ndarray) -> None:
        keep = logits[ids].copy()
        logits.fill(-np.inf)
        logits[ids] = keep
