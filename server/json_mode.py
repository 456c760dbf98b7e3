"""``response_format`` -> a per-request ``JsonGrammar`` logit processor.

Compiling a schema is the expensive part (milliseconds to seconds; ``compile_json_schema`` keeps its own
LRU of compiled grammars, so a repeated schema costs microseconds); a ``JsonGrammar`` over a compiled
grammar is a cheap per-request cursor. The token vocabulary is built once per engine (at startup, in a
worker thread). Compiles run in a worker thread; the mask time of every token is observed into the
metrics by a thin wrapper around the processor (two ``perf_counter`` calls and one histogram observation).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .metrics import ServerMetrics
from .protocol import JsonSchemaFormat

__all__ = ["JsonModeService", "TimedProcessor"]

ANY_OBJECT = "any_object"


class TimedProcessor:
    """Wraps a logit processor, observing the time of each ``process`` call (scheduler thread)."""

    def __init__(self, inner: Any, metrics: ServerMetrics) -> None:
        self.inner = inner
        self._observe = metrics.grammar_mask.observe

    def process(self, generated_ids: Sequence[int], logits: np.ndarray) -> None:
        start = time.perf_counter()
        self.inner.process(generated_ids, logits)
        self._observe(time.perf_counter() - start)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class JsonModeService:
    """Owns one engine's token vocabulary; hands out JSON grammar processors. Thread-safe."""

    def __init__(self, model_dir: Path, vocab_size: int, stop_token_ids: Sequence[int], metrics: ServerMetrics,
                 compile_budget_s: float = 5.0, fast_forward_healing: bool = False) -> None:
        self._model_dir = Path(model_dir)
        self._compile_budget_s = compile_budget_s
        self._healing = fast_forward_healing
        self._vocab_size = vocab_size
        self._stop_token_ids = tuple(stop_token_ids)
        self._metrics = metrics
        self._lock = threading.Lock()
        self._vocab: Any = None
        self._forcer: Any = None

    def vocabulary(self) -> Any:
        """The engine's ``TokenVocabulary`` (built on first call; blocking, ~0.1-1 s)."""
        with self._lock:
            if self._vocab is None:
                from realizar_ort.grammar.matcher import TokenVocabulary

                self._vocab = TokenVocabulary.from_tokenizer_file(
                    self._model_dir / "tokenizer.json", vocab_size=self._vocab_size,
                    stop_token_ids=self._stop_token_ids,
                )
            return self._vocab

    def forcer(self) -> Any:
        """The engine's ``ForcedTokenizer`` (fast-forward: forced bytes -> the tokenizer's own tokens)."""
        vocab = self.vocabulary()
        with self._lock:
            if self._forcer is None:
                from realizar_ort.grammar.forced import ForcedTokenizer
                from realizar_ort.tokenizer import Tokenizer

                self._forcer = ForcedTokenizer(vocab, Tokenizer.from_file(self._model_dir / "tokenizer.json"),
                                               self._healing)
            return self._forcer

    def compiled(self, schema: dict[str, Any] | str, strict: bool = False) -> Any:
        """The compiled grammar for ``schema`` (or ``"any_object"``); blocking on a cache miss. ``strict``:
        OpenAI's strict mode (``additionalProperties`` absent means false where ``properties`` is given)."""
        from realizar_ort.grammar.matcher import compile_json_schema

        vocab = self.vocabulary()
        start = time.perf_counter()
        grammar = compile_json_schema(schema, vocab, strict=strict, deadline_s=self._compile_budget_s)
        self._metrics.grammar_compile.observe(time.perf_counter() - start)
        return grammar

    def warm_up(self) -> None:
        """Build the vocabulary and run one mask, so the first JSON request does not pay for the kernels'
        JIT compilation inside the scheduler thread (which would stall the whole batch). Blocking, ~1 s."""
        from realizar_ort.grammar.matcher import JsonGrammar

        warm = JsonGrammar(self.compiled(ANY_OBJECT), self.forcer())
        warm.forced_tokens([], 1)
        warm.process([], np.zeros(self._vocab_size, dtype=np.float32))

    def processor(self, fmt: JsonSchemaFormat) -> TimedProcessor:
        """A fresh per-request processor enforcing ``fmt`` (blocking when the grammar is not cached)."""
        from realizar_ort.grammar.matcher import JsonGrammar

        if fmt.type == "json_schema" and fmt.schema:
            grammar = self.compiled(fmt.schema, strict=fmt.strict)
        else:
            grammar = self.compiled(ANY_OBJECT)
        return TimedProcessor(JsonGrammar(grammar, self.forcer()), self._metrics)
