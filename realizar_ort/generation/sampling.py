"""Per-request sampling: `SamplingParams` (what the caller asks for) and `RequestSampler` (how it is done).

Step order for one sequence's logits row (onnxruntime-genai's order): logit processors (grammar masks)
in order, then repetition/presence/frequency penalties, then greedy argmax or temperature -> top_k ->
top_p -> min_p -> one draw from the request's own RNG. Each request owns its `numpy.random.Generator`
and draws exactly one uniform per sampled token, so the same seed and request give the same tokens
whatever else shares the batch.

Costs: a plain greedy row is one `argmax` (batched across rows by `sample_batch`); a sampled row costs
one softmax over the vocabulary plus a partial sort only when `top_p < 1`; penalties cost one pass over
the vocabulary. Threading: a `RequestSampler` is used by the scheduler thread only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidRequestError
from .logits import LogitProcessor

__all__ = ["MAX_TOP_LOGPROBS", "RequestSampler", "SampledToken", "SamplingParams", "sample_batch"]

MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class SamplingParams:
    """Per-request generation knobs. Validated on construction (`InvalidRequestError` naming the field).

    `max_tokens=None` means "the engine's `default_max_tokens`, clamped to the context left after the
    prompt"; an explicit `max_tokens` that does not fit in the context is refused (`ContextLengthError`).
    `temperature=0` is greedy. `top_k=0`, `top_p=1`, `min_p=0` disable those filters. `stop` strings are
    matched on the decoded text and never appear in the output; `stop_token_ids` add to the model's eos
    ids. `logprobs` are of the raw model distribution. `logit_processors` are per-request (stateful)
    instances, applied first, in order. `ignore_eos` keeps generating past eos ids (benchmarks).
    `fast_forward=False` samples every token even where a grammar forces it (step-identical sampling);
    with it on (the default), the tokens a grammar processor forces are appended without a sampling step
    (see the scheduler). It never applies with logprobs, or with logit processors other than one grammar.
    """

    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    logit_processors: tuple[LogitProcessor, ...] = ()
    skip_special_tokens: bool = True
    ignore_eos: bool = False
    fast_forward: bool = True

    def __post_init__(self) -> None:
        if self.stop is not None and not isinstance(self.stop, (str, list, tuple)):
            raise InvalidRequestError(f"stop must be a string or a list of strings, got {type(self.stop).__name__}",
                                      "stop")
        for name in ("stop_token_ids", "logit_processors"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (list, tuple)):
                raise InvalidRequestError(f"{name} must be a list, got {type(value).__name__}", name)
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids or ()))
        object.__setattr__(self, "logit_processors", tuple(self.logit_processors or ()))
        _check_int(self.max_tokens, "max_tokens", minimum=1, optional=True)
        _check_number(self.temperature, "temperature", 0.0, math.inf)
        _check_number(self.top_p, "top_p", 0.0, 1.0)
        if self.top_p <= 0.0:
            raise InvalidRequestError(f"top_p must be in (0, 1], got {self.top_p}", "top_p")
        _check_int(self.top_k, "top_k", minimum=0)
        _check_number(self.min_p, "min_p", 0.0, 1.0)
        _check_number(self.presence_penalty, "presence_penalty", -2.0, 2.0)
        _check_number(self.frequency_penalty, "frequency_penalty", -2.0, 2.0)
        _check_number(self.repetition_penalty, "repetition_penalty", 0.0, math.inf)
        if self.repetition_penalty <= 0.0:
            raise InvalidRequestError(
                f"repetition_penalty must be > 0, got {self.repetition_penalty}", "repetition_penalty"
            )
        _check_int(self.seed, "seed", minimum=-(2**63), optional=True)
        for s in stop:
            if not isinstance(s, str) or not s:
                raise InvalidRequestError(f"stop strings must be non-empty strings, got {s!r}", "stop")
        for t in self.stop_token_ids:
            _check_int(t, "stop_token_ids", minimum=0)
        if not isinstance(self.fast_forward, bool):
            raise InvalidRequestError(f"fast_forward must be a boolean, got {self.fast_forward!r}", "fast_forward")
        if not isinstance(self.logprobs, bool):
            raise InvalidRequestError(f"logprobs must be a boolean, got {self.logprobs!r}", "logprobs")
        _check_int(self.top_logprobs, "top_logprobs", minimum=0)
        if self.top_logprobs > MAX_TOP_LOGPROBS:
            raise InvalidRequestError(
                f"top_logprobs must be <= {MAX_TOP_LOGPROBS}, got {self.top_logprobs}", "top_logprobs"
            )
        for p in self.logit_processors:
            if not callable(getattr(p, "process", None)):
                raise InvalidRequestError(
                    f"logit_processors must have a process(generated_ids, logits) method, got {p!r}",
                    "logit_processors",
                )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs or self.top_logprobs > 0

    @property
    def has_penalties(self) -> bool:
        return self.presence_penalty != 0.0 or self.frequency_penalty != 0.0 or self.repetition_penalty != 1.0


def _check_number(value: object, name: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidRequestError(f"{name} must be a number, got {value!r}", name)
    if not low <= value <= high:
        raise InvalidRequestError(f"{name} must be in [{low}, {high}], got {value}", name)


def _check_int(value: object, name: str, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidRequestError(f"{name} must be an integer, got {value!r}", name)
    if value < minimum:
        raise InvalidRequestError(f"{name} must be >= {minimum}, got {value}", name)


@dataclass(frozen=True)
class SampledToken:
    token_id: int
    logprob: float | None = None  # raw-distribution logprob of token_id (when logprobs were asked for)
    top_ids: tuple[int, ...] = ()
    top_logprobs: tuple[float, ...] = ()


class RequestSampler:
    """One request's sampler: its params, its RNG and its penalty state. Scheduler thread only."""

    def __init__(self, params: SamplingParams, prompt_ids: Sequence[int], vocab_size: int) -> None:
        self.params = params
        self.vocab_size = vocab_size
        self._rng = np.random.default_rng(params.seed if params.seed is None else params.seed % 2**64)
        self._counts: np.ndarray | None = None  # int32 [V]: generated-token counts (presence/frequency)
        self._seen: np.ndarray | None = None  # bool [V]: prompt + generated ids (repetition penalty)
        if params.presence_penalty != 0.0 or params.frequency_penalty != 0.0:
            self._counts = np.zeros(vocab_size, dtype=np.int32)
        self._prompt_ids: frozenset[int] = frozenset()  # (repetition penalty only: see `forget`)
        if params.repetition_penalty != 1.0:
            self._seen = np.zeros(vocab_size, dtype=bool)
            ids = np.asarray(prompt_ids, dtype=np.int64)
            self._seen[ids[ids < vocab_size]] = True
            self._prompt_ids = frozenset(ids.tolist())
        self.plain_greedy = params.greedy and not (
            params.logit_processors or params.has_penalties or params.wants_logprobs
        )

    def choose(self, row: np.ndarray, generated_ids: Sequence[int]) -> SampledToken:
        """Pick the next token from one float32 logits row `[V]` (modified in place)."""
        p = self.params
        raw_logprobs = _log_softmax(row) if p.wants_logprobs else None  # [V] before any shaping
        for processor in p.logit_processors:  # 1. grammar masks and other processors, in order
            processor.process(generated_ids, row)
        self._apply_penalties(row)  # 2. penalties
        token = int(np.argmax(row)) if p.greedy else self._draw(row)  # 3. sample
        self.record(token)
        if raw_logprobs is None:
            return SampledToken(token)
        top_ids: tuple[int, ...] = ()
        top_lps: tuple[float, ...] = ()
        if p.top_logprobs > 0:
            k = min(p.top_logprobs, raw_logprobs.shape[0])
            part = np.argpartition(-raw_logprobs, k - 1)[:k]
            part = part[np.argsort(-raw_logprobs[part], kind="stable")]
            top_ids = tuple(int(i) for i in part)
            top_lps = tuple(float(raw_logprobs[i]) for i in part)
        return SampledToken(token, float(raw_logprobs[token]), top_ids, top_lps)

    def record(self, token: int) -> None:
        """Account for a generated token in the penalty state (called for every token, greedy too)."""
        if self._counts is not None:
            self._counts[token] += 1
        if self._seen is not None:
            self._seen[token] = True

    def forget(self, token: int, generated_ids: Sequence[int]) -> None:
        """Undo `record(token)`: the token was taken back (fast-forward's token healing replaced it);
        `generated_ids` are the generated tokens without it."""
        if self._counts is not None:
            self._counts[token] -= 1
        if self._seen is not None:
            self._seen[token] = token in self._prompt_ids or token in generated_ids

    def _apply_penalties(self, row: np.ndarray) -> None:
        p = self.params
        if self._seen is not None:  # HF/vLLM repetition penalty over prompt + output
            seen = row[self._seen]
            row[self._seen] = np.where(seen > 0, seen / p.repetition_penalty, seen * p.repetition_penalty)
        if self._counts is not None:  # OpenAI presence/frequency penalties over the output
            row -= p.frequency_penalty * self._counts + p.presence_penalty * (self._counts > 0)

    def _draw(self, row: np.ndarray) -> int:
        p = self.params
        vocab = row.shape[0]
        scaled = row.astype(np.float64) / p.temperature  # [V]
        candidates: np.ndarray | None = None  # token ids still allowed, or None for the whole vocab
        if 0 < p.top_k < vocab:  # top_k: argpartition, then order by id so the draw is reproducible
            candidates = np.sort(np.argpartition(scaled, vocab - p.top_k)[vocab - p.top_k :])
            scaled = scaled[candidates]
        peak = scaled.max()
        if not np.isfinite(peak):  # everything masked: fall back to the raw argmax (processors promise
            return int(np.argmax(row))  # to leave stop tokens open, so this is a defensive path)
        probs = np.exp(scaled - peak)
        probs /= probs.sum()
        order: np.ndarray | None = None  # positions into probs, most likely first
        if p.top_p < 1.0:
            order = _nucleus(probs, p.top_p)
        if p.min_p > 0.0:
            threshold = p.min_p * probs.max()
            if order is None:
                order = np.flatnonzero(probs >= threshold)
            else:
                order = order[probs[order] >= threshold]
        kept = probs if order is None else probs[order]
        cumulative = np.cumsum(kept)
        u = self._rng.random() * cumulative[-1]
        pick = min(int(np.searchsorted(cumulative, u, side="right")), kept.shape[0] - 1)
        position = pick if order is None else int(order[pick])
        return position if candidates is None else int(candidates[position])


def _nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Positions of the smallest most-likely set whose mass reaches top_p, most likely first.

    Sorting the whole vocabulary costs milliseconds; the nucleus is usually small, so try the top 64,
    512, ... first (argpartition is linear) and sort only those.
    """
    n = probs.shape[0]
    k = 64
    while True:
        if k >= n:
            top = np.argsort(-probs, kind="stable")
        else:
            top = np.argpartition(-probs, k - 1)[:k]
            if probs[top].sum() < top_p:
                k *= 8
                continue
            top = top[np.argsort(-probs[top], kind="stable")]
        cumulative = np.cumsum(probs[top])
        keep = min(int(np.searchsorted(cumulative, top_p, side="left")) + 1, top.shape[0])
        return top[:keep]


def _log_softmax(row: np.ndarray) -> np.ndarray:
    x = row.astype(np.float64)
    peak = x.max()
    return x - (peak + np.log(np.exp(x - peak).sum()))


def sample_batch(
    logits: np.ndarray, samplers: Sequence[RequestSampler], generated: Sequence[Sequence[int]]
) -> list[SampledToken | Exception]:
    """Choose one token per row of `logits` `[b, V]` (rows are modified in place).

    Plain greedy rows (no processors, penalties or logprobs) share one vectorised argmax. A row whose
    logit processor raises gets the exception in its slot instead of a token; other rows are unaffected.
    """
    batch = len(samplers)
    if batch == 1 and samplers[0].plain_greedy:  # batch 1's usual row: one argmax, nothing else per step
        token = int(logits[0].argmax())
        samplers[0].record(token)
        return [SampledToken(token)]
    plain = [i for i in range(batch) if samplers[i].plain_greedy]
    out: list[SampledToken | Exception | None] = [None] * batch
    if plain:
        rows = logits[:batch] if len(plain) == batch else logits[plain]
        for i, token in zip(plain, np.argmax(rows, axis=1).tolist()):
            samplers[i].record(token)
            out[i] = SampledToken(token)
    if len(plain) < batch:
        for i in range(batch):
            if out[i] is None:
                try:
                    out[i] = samplers[i].choose(logits[i], generated[i])
                except Exception as exc:  # noqa: BLE001 - handed to that request's caller
                    out[i] = exc
    return out  # type: ignore[return-value]
