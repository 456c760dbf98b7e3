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
- ``between`` (the call, or the array of parallel calls, is complete), ``done``, ``error``: only the stop
  tokens (the processor contract: never raise on model output).

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
Phase = Literal["start", "free", "force_opening", "call", "between", "done", "error"]


class _Matcher(Protocol):
    def fill_next_token_bitmask(self, bitmask: np.ndarray) -> Any: ...
    def advance(self, token_id: int) -> bool: ...
    def is_accepting(self) -> bool: ...


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
    ) -> None:
        """`grammar`: the compiled JSON grammar of what follows the opening (one call body, or with
        `parallel` a body or an array of bodies); None only with ``mode="none"``. `parallel`: a reply
        starting with ``[`` opens (an array of) calls too."""
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
        self._seen = 0
        self._bitmask = allocate_token_bitmask(tables.vocab_size)
        self.phase: Phase = "start"
        self._start_ok = np.empty(0, dtype=np.int64)
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

    def _new_matcher_first_tokens(self) -> np.ndarray:
        assert self._grammar is not None
        self._matcher = self._grammar.matcher()
        self._bitmask.fill(0)
        self._matcher.fill_next_token_bitmask(self._bitmask)
        return _allowed_ids(self._bitmask, self.tables.vocab_size)

    # ---- LogitProcessor ----------------------------------------------------------------------------
    def process(self, generated_ids: Sequence[int], logits: np.ndarray) -> None:
        for token in generated_ids[self._seen :]:
            self._advance(int(token))
        self._seen = len(generated_ids)
        self._mask(logits)

    # ---- phase changes ------------------------------------------------------------------------------
    def _start_call(self) -> None:
        assert self._grammar is not None
        self._matcher = self._grammar.matcher()
        self.phase = "call"

    def _advance(self, token: int) -> None:
        t = self.tables
        phase = self.phase
        if phase == "start":
            if token == t.opening_id and self.mode != "none":
                self._start_call()
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
