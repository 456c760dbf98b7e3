"""Continuous batching: one thread owns the running batch and turns requests into streamed deltas.

Each loop iteration is a step boundary: retire cancelled rows, admit waiting requests up to
`max_batch_size` (prefilled alone, or right-padded together with others admitted at the same boundary -
bitwise the same numbers either way - and its first token sampled, then merged into the batch), run
one `decode_step` for the whole batch, sample one token per row, push each row's delta to its request's
queue, and retire rows that finished. Callers block on their own queue, never on the batch.

Prefill is bounded per boundary so running streams keep flowing: short prompts are prefilled whole, up
to `prefill_chunk` tokens per boundary (always at least one prompt); with a decoder that supports it, a
longer prompt is prefilled `prefill_chunk` tokens per boundary (one such prompt at a time, its row
reserved) and joins the batch when its last chunk has run. Tokens are the same either way.

Fast-forward: tokens a grammar forces at the very start are prefilled with the prompt. A request whose
grammar forces its next tokens (`Request.forcer`, a logit processor with
`forced_tokens`) gets them appended and streamed at once after each sampled token, and fed to the model
without sampling: a row alone in the batch feeds its sampled token and all its forced ones in one pass
(`decoder.extend`, the chunked-prefill path); in a larger batch, a row with a forced run may feed it in
a pass of its own when the row-steps that saves outweigh the pass's measured cost (see `_feed_long_runs`;
onnxruntime's GroupQueryAttention takes several tokens on top of a past only for one row per pass), and
otherwise feeds one forced token per step, never sampling until they are all in.
The Optimum graph (no `extend`) feeds them one per step. Token healing: where the grammar says the sampled
token and the run after it are spelled otherwise by the tokenizer (`healed_forced_tokens`), the run replaces
that token before anything is fed (a sampled token is fed with the next pass), so the KV never holds it;
its text was streamed already, and the run's delta says `replaces=1`.

Prefix cache (`PrefixCache`, fused graph only): a prompt whose first blocks are cached has their KV
copied into its slot and prefills only the rest, which counts against the per-boundary budget; the rest
is fed as one chunk on top of the copied positions (`decoder.extend`), or chunk by chunk when it is long.
Prompts are stored once prefilled (so a burst sharing a long prefix computes it once: chunked prompts go
one at a time, and the next one's lookup sees the first one's blocks), and a finished row's whole
sequence (prompt + answer) is stored when it retires, ready for the conversation's next turn.

Threading: `submit` and `Request.cancel` may be called from any thread; everything else runs on the
scheduler thread. A failure inside one request's logit processors fails that request only; a failure
of the graph fails the requests in the batch and the loop carries on.
"""

from __future__ import annotations

import collections
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import EngineClosedError, QueueFullError, RealizarError
from .decoder import Decoder
from .detokenizer import TextStream
from .prefix_cache import PrefixCache
from .results import GenerationDelta, TokenLogprob, Usage
from .sampling import RequestSampler, SampledToken, SamplingParams, sample_batch

__all__ = ["Request", "Scheduler"]

log = logging.getLogger(__name__)

DIRECT_DELIVERY_MAX = 2  # a step with at most this many deltas skips the courier thread
PREFILL_CHUNK_TOKENS = 256  # default prompt tokens prefilled per step boundary (see the module docstring)
PASS_MARGIN = 1.25  # a feeding pass must save this much more than it costs (timing noise: never slower than off)
_ids = itertools.count(1)


@dataclass(eq=False)
class Request:
    """One generation in flight. Created by the engine; mutated by the scheduler thread only
    (except `cancelled`, a flag any thread may set)."""

    prompt_ids: list[int]
    params: SamplingParams
    max_tokens: int
    stop_ids: frozenset[int]
    sampler: RequestSampler
    text: TextStream
    to_logprob: Callable[[SampledToken], TokenLogprob] | None = None
    request_id: int = field(default_factory=lambda: next(_ids))
    out: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)  # GenerationDelta | BaseException
    generated: list[int] = field(default_factory=list)
    seq_length: int = 0  # tokens in this row's KV
    next_token: int = -1  # sampled (or forced), not yet fed
    forcer: Any = None  # the logit processor that says which tokens its grammar forces (fast-forward), if any
    pending: list[int] = field(default_factory=list)  # forced tokens to feed after next_token, in order
    prompt_forced: int = 0  # forced tokens at the very start, prefilled with the prompt (the end of prompt_ids)
    cached_tokens: int = 0  # prompt positions loaded from the prefix cache instead of prefilled
    prefix_keys: list[bytes] | None = None  # the prompt's prefix-cache block keys (computed once)
    cancelled: bool = False
    finished: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    def __init__(
        self,
        decoder: Decoder,
        max_batch: int,
        max_queued: int,
        prefill_chunk: int = PREFILL_CHUNK_TOKENS,
        prefix_cache: PrefixCache | None = None,
    ) -> None:
        if prefix_cache is not None and not getattr(decoder, "prefix_caching", False):
            raise ValueError("this decoder cannot load cached prefixes (the prefix cache needs the fused graph)")
        self.decoder = decoder
        self.cache = prefix_cache
        self.max_batch = max_batch
        self.max_queued = max_queued
        self.prefill_chunk = prefill_chunk
        self._waiting: collections.deque[Request] = collections.deque()
        self._running: list[Request] = []
        self._chunking: Request | None = None  # a long prompt being prefilled chunk by chunk (its row reserved)
        self._chunked_tokens = 0  # how much of its prompt is in the decoder's staging slot
        self._cond = threading.Condition()
        self._closed = False
        self._counters = {
            "prompt_tokens": 0,
            "generated_tokens": 0,
            "decode_steps": 0,
            "prefill_passes": 0,  # graph passes that prefill prompts (a batch of short ones, or one chunk)
            "requests_finished": 0,
            "forced_tokens": 0,  # tokens appended because the grammar forced them (fast-forward), not sampled
            "healed_tokens": 0,  # sampled tokens replaced with the forced run after them (token healing)
            "model_steps_saved": 0,  # tokens fed beyond one per pass for their row (multi-token passes)
            "forced_passes": 0,  # extra passes that fed one row's forced tokens next to a batch step
        }
        self._decode_step_seconds = 0.0
        self._costs = _PassCosts(max_batch)
        self._outbox: list[tuple[queue.SimpleQueue, object]] = []  # this step's (caller queue, item)
        self._courier = _Courier()
        self._thread = threading.Thread(target=self._loop, name="realizar-scheduler", daemon=True)
        self._thread.start()

    # ---- any thread ---------------------------------------------------------------------------------
    def submit(self, request: Request) -> None:
        with self._cond:
            if self._closed or not self._thread.is_alive():
                raise EngineClosedError("the engine is closed")
            if len(self._waiting) >= self.max_queued:
                raise QueueFullError(f"the request queue is full ({self.max_queued} waiting); retry later")
            self._waiting.append(request)
            self._cond.notify()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stats(self) -> dict[str, float | int]:
        return {
            "running": len(self._running),
            "waiting": len(self._waiting) + (self._chunking is not None),
            "max_batch_size": self.max_batch,
            "kv_length": max((r.seq_length for r in self._running), default=0),
            "kv_bytes_in_use": self.decoder.kv_bytes_in_use([r.seq_length for r in self._running]),
            **self._counters,
            "decode_step_seconds": self._decode_step_seconds,
            "session_run_seconds": self.decoder.session_run_seconds,
            "prefill_seconds": self.decoder.prefill_seconds,
            "prefix_cache_enabled": self.cache is not None,
            **(self.cache.stats() if self.cache is not None else _NO_CACHE_STATS),
        }

    def close(self, timeout: float | None = 10.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    # ---- scheduler thread ---------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while True:
                if not self._running:
                    self._deliver(direct=True)  # no batch is waiting on this thread: skip the courier hop
                with self._cond:
                    while not self._closed and not self._waiting and not self._running and not self._chunking:
                        self._cond.wait()
                    if self._closed:
                        break
                    admitted = self._take_admissions()
                self._retire(cancelled_only=True)
                if admitted:
                    self._prefill_admitted(admitted)
                if self._chunking is not None:
                    self._prefill_next_chunk()
                if self._running:
                    self._decode_step()
            self._fail_all(EngineClosedError("the engine was closed"))
        except BaseException as exc:  # pragma: no cover - a bug in the loop itself: fail everyone loudly
            log.exception("scheduler thread crashed")
            self._fail_all(RealizarError(f"the engine's scheduler failed: {exc!r}"))
            raise
        finally:
            self._courier.close()  # callers have every item before the thread counts as dead

    def _take_admissions(self) -> list[Request]:
        """Waiting requests to start at this boundary (lock held), in arrival order, while rows are free:
        short prompts up to `prefill_chunk` tokens in all (always at least one), and at most one long
        prompt to prefill in chunks (when the decoder can), so a burst of prompts delays the running
        streams by a bounded amount per step."""
        taken: list[Request] = []
        budget = self.prefill_chunk
        free_rows = self.max_batch - len(self._running) - (self._chunking is not None)
        while self._waiting and len(taken) < free_rows:
            cost = self._uncached_tokens(self._waiting[0])
            if cost > self.prefill_chunk and self.decoder.chunked_prefill:
                if self._chunking is not None or any(self._uncached_tokens(r) > self.prefill_chunk for r in taken):
                    break  # one chunked prompt at a time
            elif taken and cost > budget:
                break
            else:
                budget -= cost
            taken.append(self._waiting.popleft())
        return taken

    def _uncached_tokens(self, request: Request) -> int:
        """Prompt tokens `request` has to prefill: those past its longest cached prefix (as of now)."""
        n = len(request.prompt_ids)
        if self.cache is None:
            return n
        if request.prefix_keys is None:
            request.prefix_keys = self.cache.keys(request.prompt_ids)
        return n - self.cache.peek(request.prefix_keys, n - 1)

    def _load_cached_prefix(self, request: Request, slot: int) -> int:
        """Copy `request`'s longest cached prefix into `slot`; returns its length (0: none)."""
        n = len(request.prompt_ids)
        if request.prefix_keys is None:
            request.prefix_keys = self.cache.keys(request.prompt_ids)
        match = self.cache.match(request.prefix_keys, n - 1)
        self.cache.record(n, match.tokens)
        if match.tokens:
            self.cache.load(match, self.decoder.kv, slot)
        request.cached_tokens = match.tokens
        return match.tokens

    def _store(self, request: Request, slot: int, length: int) -> None:
        """Keep the full blocks of `request`'s first `length` tokens (prompt, then answer) from `slot`."""
        if self.cache is None:
            return
        if length <= len(request.prompt_ids):
            tokens = request.prompt_ids
        else:  # the prompt's forced tail (fast-forward at the start) is also the answer's head: count it once
            tokens = request.prompt_ids[: len(request.prompt_ids) - request.prompt_forced] + request.generated
        self.cache.store(tokens, length, self.decoder.kv, slot, request.prefix_keys or ())

    def _prefill_admitted(self, admitted: list[Request]) -> None:
        """Stage 1: prefill this boundary's admissions. A long prompt starts its chunked prefill; short ones
        run alone or, where the decoder can, right-padded in groups (one pass over the weights per group,
        at most `prefill_chunk` padded positions each), and each starts with its first token. Prompts with
        a cached prefix come last, one pass each (their rests start at different positions)."""
        short: list[Request] = []
        cached: list[Request] = []
        for request in admitted:
            if request.cancelled:
                continue
            self._counters["prompt_tokens"] += len(request.prompt_ids)
            if self._fast_forward(request):  # forced from the start: prefilled with the prompt
                continue
            if request.pending:
                request.prompt_ids = [*request.prompt_ids, *request.pending]
                request.prompt_forced, request.pending = len(request.pending), []
                request.prefix_keys = None  # the prompt grew: its block keys are computed again
            if self._uncached_tokens(request) > self.prefill_chunk and self.decoder.chunked_prefill:
                self._chunking = request
                self._chunked_tokens = self._load_cached_prefix(request, self.decoder.kv.staging_slot) if self.cache else 0
            elif self.cache is not None and self._uncached_tokens(request) < len(request.prompt_ids):
                cached.append(request)
            else:
                if self.cache is not None:
                    self.cache.record(len(request.prompt_ids), 0)
                short.append(request)
        if not self.decoder.batched_prefill:
            for request in short:
                self._prefill_group([request])
            return
        group: list[Request] = []
        width = 0  # the group's longest prompt: every row of the pass is padded to it
        for request in short:
            n = len(request.prompt_ids)
            if group and max(width, n) * (len(group) + 1) > self.prefill_chunk:
                self._prefill_group(group)
                group, width = [], 0
            group.append(request)
            width = max(width, n)
        if group:
            self._prefill_group(group)
        for request in cached:
            self._prefill_rest(request)

    def _prefill_rest(self, request: Request) -> None:
        """Load `request`'s cached prefix into the next free slot and feed the rest of its prompt there as
        one chunk; then start it. Its prefix is re-matched here, so blocks evicted since it was admitted
        are simply computed."""
        slot = self.decoder.next_slot
        done = self._load_cached_prefix(request, slot)
        self._counters["prefill_passes"] += 1
        try:
            logits = self.decoder.extend(slot, request.prompt_ids[done:], done)  # [V]
        except Exception as exc:  # noqa: BLE001 - a bad prompt fails this request only
            request.finished = True
            self._emit(request, exc)
            return
        self._store(request, slot, len(request.prompt_ids))
        self._start_prefilled(request, logits, self.decoder.admit)

    def _prefill_group(self, group: list[Request]) -> None:
        """Run the prompts of `group` (one pass), sample each one's first token, admit those that go on."""
        self._counters["prefill_passes"] += 1
        try:
            if len(group) == 1:
                logits = self.decoder.prefill(group[0].prompt_ids)[None, :]  # [1, V]
            else:
                logits = self.decoder.prefill_batch([r.prompt_ids for r in group])  # [k, V]
        except Exception as exc:  # noqa: BLE001 - a bad prompt fails its own requests only
            for request in group:
                request.finished = True
                self._emit(request, exc)
            return
        if self.cache is not None:
            first = self.decoder.next_slot  # the group sits in slots first .. first + k - 1
            for j, request in enumerate(group):
                self._store(request, first + j, len(request.prompt_ids))
        sampled = sample_batch(logits, [r.sampler for r in group], [r.generated for r in group])
        for j, (request, choice) in enumerate(zip(group, sampled)):
            if isinstance(choice, BaseException):  # this request's logit processor failed
                request.finished = True
                self._emit(request, choice)
            elif not self._accept(request, choice) and not self._fast_forward(request, after_sampled=True):
                if len(group) == 1:
                    self.decoder.admit()
                else:
                    self.decoder.admit_prefilled(j, len(request.prompt_ids))  # moved down past dropped rows
                request.seq_length = len(request.prompt_ids)
                self._running.append(request)

    def _prefill_next_chunk(self) -> None:
        """Run the next `prefill_chunk` tokens of the long prompt in flight; start it after its last chunk."""
        request, done = self._chunking, self._chunked_tokens
        if request.cancelled:
            self._chunking = None
            return
        chunk = request.prompt_ids[done : done + self.prefill_chunk]
        self._counters["prefill_passes"] += 1
        try:
            logits = self.decoder.prefill_chunk(chunk, done)  # [V]
        except Exception as exc:  # noqa: BLE001 - a bad prompt fails this request only
            self._chunking = None
            request.finished = True
            self._emit(request, exc)
            return
        self._chunked_tokens = done + len(chunk)
        if self._chunked_tokens == len(request.prompt_ids):
            self._chunking = None
            n = len(request.prompt_ids)
            self._store(request, self.decoder.kv.staging_slot, n)
            self._start_prefilled(request, logits, lambda: self.decoder.admit_staged(n))

    def _start_prefilled(self, request: Request, logits: np.ndarray, admit: Callable[[], int]) -> None:
        """Sample a prefilled request's first token and, unless that ends it, `admit` its row to the batch."""
        (sampled,) = sample_batch(logits[None, :], [request.sampler], [request.generated])
        if isinstance(sampled, BaseException):  # its logit processor failed
            request.finished = True
            self._emit(request, sampled)
            return
        if self._accept(request, sampled) or self._fast_forward(request, after_sampled=True):
            return
        admit()  # row index == len(self._running)
        request.seq_length = len(request.prompt_ids)
        self._running.append(request)

    def _decode_step(self) -> None:
        """Stage 2: one token for every running row (several for a row feeding forced tokens), then sample
        the rows that have nothing left to feed, emit and retire."""
        started = time.perf_counter()
        running = self._running
        try:
            if len(running) == 1 and running[0].pending and self.decoder.chunked_prefill:
                logits = self._feed_alone(running[0])  # [1, V]
            else:
                if self.decoder.chunked_prefill and any(r.pending for r in running):
                    self._feed_long_runs(running)
                next_tokens = np.fromiter((r.next_token for r in running), np.int64, len(running))  # [b]
                seq_lengths = np.fromiter((r.seq_length for r in running), np.int64, len(running))  # [b]
                ran = time.perf_counter()
                logits = self.decoder.decode_step(next_tokens, seq_lengths, self._deliver)  # [b, V]
                self._costs.record_step(len(running), time.perf_counter() - ran)
                for request in running:
                    request.seq_length += 1
        except Exception as exc:
            log.exception("decode step failed")
            self._fail_running(RealizarError(f"inference failed: {exc}"))
            return
        self._counters["decode_steps"] += 1
        feeding = [bool(r.pending) for r in running]  # rows whose next token is forced: nothing to sample
        if any(feeding):
            rows = [i for i, f in enumerate(feeding) if not f]
            for request in running:
                if request.pending:
                    request.next_token = request.pending.pop(0)
            sampled = sample_batch(logits[rows], [running[i].sampler for i in rows], [running[i].generated for i in rows])
            pairs = [(running[i], choice) for i, choice in zip(rows, sampled)]
        else:
            sampled = sample_batch(logits, [r.sampler for r in running], [r.generated for r in running])
            pairs = list(zip(running, sampled))
        for request, choice in pairs:
            if isinstance(choice, BaseException):  # this request's logit processor failed
                request.finished = True
                self._emit(request, choice)
            elif not self._accept(request, choice):
                self._fast_forward(request, after_sampled=True)
        self._retire(cancelled_only=False)
        self._decode_step_seconds += time.perf_counter() - started

    def _feed_alone(self, request: Request) -> np.ndarray:
        """The only row: its sampled token and every forced one in one pass (a prefill chunk); logits [1, V]."""
        self._deliver()
        tokens = [request.next_token, *request.pending]
        started = time.perf_counter()
        logits = self.decoder.extend(0, tokens, request.seq_length)[None, :]
        self._costs.record_feed(len(tokens), time.perf_counter() - started)  # the same kind of pass as in a batch
        request.seq_length += len(tokens)
        request.pending = []
        self._counters["model_steps_saved"] += len(tokens) - 1
        return logits

    def _feed_long_runs(self, running: list[Request]) -> None:
        """A row feeding a forced run may feed all but its last token in a pass of its own (`decoder.extend`
        on its slot); the last one goes with the batch step, whose logits it samples from. Worth it only when
        the row-steps that saves are worth more than the pass costs: a row that feeds n tokens there finishes
        n steps sooner, so the pass runs when ``n x row_step > PASS_MARGIN x pass(n)``, with both costs
        measured as the engine runs (`_PassCosts.row_step`: what one row's share of a step is worth - a
        b-th of a step while requests wait for the freed row, else only what a step of b-1 rows saves on
        one of b). Otherwise the row feeds one forced token per step. (One row per pass: onnxruntime's
        GroupQueryAttention takes several new tokens on top of a past only for a batch of one.)"""
        b = len(running)
        row_step = self._costs.row_step(b, queued=bool(self._waiting))
        for row, request in enumerate(running):
            n = len(request.pending)
            if n < 2 or n * row_step <= PASS_MARGIN * self._costs.feed(n):
                continue
            tokens = [request.next_token, *request.pending[:-1]]
            started = time.perf_counter()
            self.decoder.extend(row, tokens, request.seq_length)
            self._costs.record_feed(n, time.perf_counter() - started)
            self._counters["forced_passes"] += 1
            request.seq_length += n
            request.next_token = request.pending[-1]
            request.pending = []
            self._counters["model_steps_saved"] += n - 1

    def _fast_forward(self, request: Request, after_sampled: bool = False) -> bool:
        """Append (and stream) the tokens the request's grammar forces next, to be fed without sampling.
        Says whether that finished the request. Right after a sampled token (`after_sampled`; it is
        `next_token`, not fed yet) the grammar may replace it (token healing at the run's start, where the
        processor has `healed_forced_tokens`): the run then starts with the tokenizer's own tokens for its
        bytes and the forced ones, and nothing needs to be taken back from the KV cache."""
        forcer = request.forcer
        if forcer is None:
            return False
        limit = request.max_tokens - len(request.generated)
        healed = getattr(forcer, "healed_forced_tokens", None) if after_sampled else None
        try:
            if healed is not None:
                drop, forced = healed(request.generated, limit)
            else:
                drop, forced = 0, forcer.forced_tokens(request.generated, limit)
        except Exception as exc:  # noqa: BLE001 - a failing processor fails its own request only
            request.finished = True
            self._emit(request, exc)
            return True
        if not forced:
            return False
        forced = [int(t) for t in forced]
        if drop:  # the sampled token (not fed yet) gives way to the tokens that spell it and the run
            replaced = request.generated.pop()
            self._counters["generated_tokens"] -= 1
            self._counters["healed_tokens"] += 1
            request.sampler.forget(replaced, request.generated)
            request.text.replace_last(replaced)
        self._counters["forced_tokens"] += len(forced) - drop
        if self._accept_tokens(request, forced, None, replaces=drop):
            return True
        if drop:
            request.next_token, forced = forced[0], forced[1:]
        request.pending = forced
        return False

    def _accept(self, request: Request, sampled: SampledToken) -> bool:
        """Record one sampled token, stream its delta, and say whether the request is finished."""
        request.next_token = sampled.token_id
        return self._accept_tokens(request, [sampled.token_id], sampled)

    def _accept_tokens(self, request: Request, tokens: list[int], sampled: SampledToken | None,
                       replaces: int = 0) -> bool:
        """Record tokens (one sampled, or a forced run), stream them as one delta, say whether it finished.
        A stop token, a stop string or `max_tokens` inside a forced run ends it there. `replaces`: the
        stream's earlier tokens these take the place of (token healing; already taken off `generated`)."""
        finish, stop_reason = None, None
        text = ""
        taken: list[int] = []
        for token in tokens:
            request.generated.append(token)
            taken.append(token)
            self._counters["generated_tokens"] += 1
            if sampled is None:
                request.sampler.record(token)
            if token in request.stop_ids:  # a stop token ends the sequence; its text is never emitted
                text += request.text.finish()
                finish, stop_reason = "stop", token
            else:
                text += request.text.push(token)
                if request.text.matched_stop is not None:
                    finish, stop_reason = "stop", request.text.matched_stop
                elif len(request.generated) >= request.max_tokens:
                    text += request.text.finish()
                    finish = "length"
            if finish is not None:
                break
        usage = None
        if finish is not None:
            request.finished = True
            self._counters["requests_finished"] += 1
            n_prompt, n_out = len(request.prompt_ids) - request.prompt_forced, len(request.generated)
            usage = Usage(n_prompt, n_out, n_prompt + n_out, cached_tokens=request.cached_tokens)
        logprobs = (request.to_logprob(sampled),) if request.to_logprob is not None and sampled is not None else None
        self._emit(request, GenerationDelta(text, tuple(taken), finish, usage, logprobs, stop_reason, replaces))
        return request.finished

    def _retire(self, cancelled_only: bool) -> None:
        """Drop finished (and cancelled) rows from the batch: the last rows move into the holes they
        leave, so the decoder copies only the rows that move."""
        running = self._running
        alive = [not (r.cancelled or (r.finished and not cancelled_only)) for r in running]
        if all(alive):
            return
        if self.cache is not None:  # their KV goes to the prefix cache before the slots are reused
            for i, request in enumerate(running):
                if not alive[i]:
                    self._store(request, i, request.seq_length)
        kept = sum(alive)
        movers = [i for i in range(kept, len(running)) if alive[i]]  # kept rows past the new end
        rows = [i if alive[i] else movers.pop() for i in range(kept)]  # rows[j] >= j
        self._running = [running[i] for i in rows]
        self.decoder.keep_rows(rows, [r.seq_length for r in self._running])

    def _emit(self, request: Request, item: GenerationDelta | Exception) -> None:
        """Queue an item for a request's caller; `_deliver` hands it over (before the next graph run)."""
        self._outbox.append((request.out, item))

    def _deliver(self, direct: bool = False) -> None:
        """Hand this step's items to the courier thread, which wakes the callers while the graph runs
        (or, with `direct` or only a few items, put them on the callers' queues from this thread: one
        wake-up fewer per step, which is what a batch of one or two streams pays for the courier)."""
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, []
        if direct or len(outbox) <= DIRECT_DELIVERY_MAX:
            self._courier.drain()  # keep each caller's items in order
            for out, item in outbox:
                out.put(item)
        else:
            self._courier.hand_over(outbox)

    def _fail_running(self, error: Exception) -> None:
        for request in self._running:
            request.finished = True
            self._emit(request, error)
        self._deliver()
        self._running = []
        self.decoder.clear()

    def _fail_all(self, error: Exception) -> None:
        with self._cond:
            waiting, self._waiting = list(self._waiting), collections.deque()
        if self._chunking is not None:
            waiting.insert(0, self._chunking)
            self._chunking = None
        for request in waiting:
            self._emit(request, error)
        self._fail_running(error)


class _PassCosts:
    """Running estimates (moving averages, seconds) of what a decode step of b rows and a one-row feeding
    pass of N tokens (a batch of one's `_feed_alone` pass, or a row's own pass in a batch) cost here, so
    `_feed_long_runs` can tell when such a pass pays. Until a size has been measured: a step is taken as the
    nearest measured one (scaled per row), and a pass of N tokens (N bucketed to a power of two) as a step
    of N rows (the same compute), times N / max_batch beyond that."""

    ALPHA = 0.2

    def __init__(self, max_batch: int) -> None:
        self._step = [0.0] * (max_batch + 1)  # [b]: seconds per decode step of b rows (0: not measured)
        self._feed: dict[int, float] = {}  # tokens bucket (a power of two) -> seconds per feeding pass

    def record_step(self, b: int, seconds: float) -> None:
        old = self._step[b]
        self._step[b] = seconds if old == 0.0 else old + self.ALPHA * (seconds - old)

    def record_feed(self, tokens: int, seconds: float) -> None:
        key = _bucket(tokens)
        old = self._feed.get(key)
        self._feed[key] = seconds if old is None else old + self.ALPHA * (seconds - old)

    def step(self, b: int) -> float:
        if self._step[b]:
            return self._step[b]
        measured = [(abs(k - b), t * b / k) for k, t in enumerate(self._step) if t]  # scaled per row
        return min(measured)[1] if measured else 1.0

    def row_step(self, b: int, queued: bool) -> float:
        """What finishing a row one step sooner saves, in a batch of b: a b-th of a step when a waiting
        request takes the freed row; else the step's cost at b rows less that at b - 1 (once measured)."""
        share = self.step(b) / b
        if queued or not self._step[b - 1]:
            return share
        return max(0.0, min(share, self._step[b] - self._step[b - 1]))

    def feed(self, tokens: int) -> float:
        measured = self._feed.get(_bucket(tokens))
        if measured is not None:
            return measured
        rows = len(self._step) - 1  # else: n tokens of one row cost about a step of n rows (the same compute)
        return self.step(max(1, min(tokens, rows))) * max(1.0, tokens / rows)


def _bucket(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


_NO_CACHE_STATS = {
    "prefix_cache_queries": 0,
    "prefix_cache_query_tokens": 0,
    "prefix_cache_hit_tokens": 0,
    "prefix_cache_blocks": 0,
    "prefix_cache_evicted_blocks": 0,
    "prefix_cache_bytes_in_use": 0,
    "prefix_cache_capacity_bytes": 0,
}


class _Courier:
    """Puts items on callers' queues from its own thread. Waking a blocked caller costs a context switch
    (~0.1-1 ms on a busy machine); doing b of those per step on the scheduler thread stalled the batch, so
    the scheduler hands over one list per step (one wake-up) and this thread does the puts, in order."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._batches: collections.deque[list[tuple[queue.SimpleQueue, object]]] = collections.deque()
        self._closed = False
        self._busy = False
        self._thread = threading.Thread(target=self._loop, name="realizar-courier", daemon=True)
        self._thread.start()

    def hand_over(self, items: list[tuple[queue.SimpleQueue, object]]) -> None:
        with self._cond:
            self._batches.append(items)
            self._cond.notify_all()

    def drain(self) -> None:
        """Block until everything handed over so far has been put. (Called by the thread that hands over, so
        nothing is added meanwhile; `_busy` is set before a batch leaves the deque, so the lock-free check
        never misses one in flight.)"""
        if not self._batches and not self._busy:
            return
        with self._cond:
            while self._batches or self._busy:
                self._cond.wait()

    def close(self) -> None:
        """Deliver everything handed over so far, then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._busy = False
                self._cond.notify_all()  # wakes drain()
                while not self._batches and not self._closed:
                    self._cond.wait()
                if not self._batches:
                    return
                self._busy = True  # before the pop: see drain()
                items = self._batches.popleft()
            for out, item in items:
                out.put(item)
