"""Continuous batching: one thread owns the running batch and turns requests into streamed deltas.

Each loop iteration is a step boundary: retire cancelled rows, admit waiting requests up to
`max_batch_size` (each is prefilled alone and its first token sampled, then merged into the batch), run
one `decode_step` for the whole batch, sample one token per row, push each row's delta to its request's
queue, and retire rows that finished. Callers block on their own queue, never on the batch.

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

import numpy as np

from .decoder import Decoder
from .detokenizer import TextStream
from .errors import EngineClosedError, QueueFullError, RealizarError
from .generation import GenerationDelta, TokenLogprob, Usage
from .sampling import RequestSampler, SampledToken, SamplingParams, sample_batch

__all__ = ["Request", "Scheduler"]

log = logging.getLogger(__name__)

PREFILL_TOKEN_BUDGET = 2048  # prompt tokens prefilled per step boundary (a longer single prompt still goes)
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
    next_token: int = -1  # sampled, not yet fed
    cancelled: bool = False
    finished: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    def __init__(self, decoder: Decoder, max_batch: int, max_queued: int) -> None:
        self.decoder = decoder
        self.max_batch = max_batch
        self.max_queued = max_queued
        self._waiting: collections.deque[Request] = collections.deque()
        self._running: list[Request] = []
        self._cond = threading.Condition()
        self._closed = False
        self._counters = {
            "prompt_tokens": 0,
            "generated_tokens": 0,
            "decode_steps": 0,
            "requests_finished": 0,
        }
        self._decode_step_seconds = 0.0
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
            "waiting": len(self._waiting),
            "max_batch_size": self.max_batch,
            "kv_length": max((r.seq_length for r in self._running), default=0),
            "kv_bytes_in_use": self.decoder.kv_bytes_in_use([r.seq_length for r in self._running]),
            **self._counters,
            "decode_step_seconds": self._decode_step_seconds,
            "session_run_seconds": self.decoder.session_run_seconds,
            "prefill_seconds": self.decoder.prefill_seconds,
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
                    while not self._closed and not self._waiting and not self._running:
                        self._cond.wait()
                    if self._closed:
                        break
                    admitted = self._take_admissions()
                self._retire(cancelled_only=True)
                for request in admitted:
                    self._prefill(request)
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
        """Waiting requests to prefill at this boundary (lock held): as many as there are free rows, but
        at most PREFILL_TOKEN_BUDGET prompt tokens (always at least one), so that a burst of long prompts
        delays the running streams by a bounded amount per step."""
        taken: list[Request] = []
        budget = PREFILL_TOKEN_BUDGET
        while self._waiting and len(self._running) + len(taken) < self.max_batch:
            cost = len(self._waiting[0].prompt_ids)
            if taken and cost > budget:
                break
            taken.append(self._waiting.popleft())
            budget -= cost
        return taken

    def _prefill(self, request: Request) -> None:
        """Stage 1: run the prompt alone, sample its first token, then merge it into the batch."""
        if request.cancelled:
            return
        self._counters["prompt_tokens"] += len(request.prompt_ids)
        try:
            logits = self.decoder.prefill(request.prompt_ids)  # [V]
            (sampled,) = sample_batch(logits[None, :], [request.sampler], [request.generated])
            if isinstance(sampled, BaseException):
                raise sampled
        except Exception as exc:  # noqa: BLE001 - a bad processor or prompt fails this request only
            request.finished = True
            self._emit(request, exc)
            return
        if self._accept(request, sampled):
            return
        self.decoder.admit()  # row index == len(self._running)
        request.seq_length = len(request.prompt_ids)
        self._running.append(request)

    def _decode_step(self) -> None:
        """Stage 2: one token for every running row, then emit and retire."""
        started = time.perf_counter()
        running = self._running
        next_tokens = np.fromiter((r.next_token for r in running), np.int64, len(running))  # [b]
        seq_lengths = np.fromiter((r.seq_length for r in running), np.int64, len(running))  # [b]
        try:
            logits = self.decoder.decode_step(next_tokens, seq_lengths, self._deliver)  # [b, V]
        except Exception as exc:
            log.exception("decode step failed")
            self._fail_running(RealizarError(f"inference failed: {exc}"))
            return
        self._counters["decode_steps"] += 1
        sampled = sample_batch(logits, [r.sampler for r in running], [r.generated for r in running])
        for request, choice in zip(running, sampled):
            request.seq_length += 1
            if isinstance(choice, BaseException):  # this request's logit processor failed
                request.finished = True
                self._emit(request, choice)
            else:
                self._accept(request, choice)
        self._retire(cancelled_only=False)
        self._decode_step_seconds += time.perf_counter() - started

    def _accept(self, request: Request, sampled: SampledToken) -> bool:
        """Record one sampled token, stream its delta, and say whether the request is finished."""
        token = sampled.token_id
        request.generated.append(token)
        request.next_token = token
        self._counters["generated_tokens"] += 1
        finish, stop_reason = None, None
        if token in request.stop_ids:  # a stop token ends the sequence; its text is never emitted
            text = request.text.finish()
            finish, stop_reason = "stop", token
        else:
            text = request.text.push(token)
            if request.text.matched_stop is not None:
                finish, stop_reason = "stop", request.text.matched_stop
            elif len(request.generated) >= request.max_tokens:
                text += request.text.finish()
                finish = "length"
        usage = None
        if finish is not None:
            request.finished = True
            self._counters["requests_finished"] += 1
            n_prompt, n_out = len(request.prompt_ids), len(request.generated)
            usage = Usage(prompt_tokens=n_prompt, completion_tokens=n_out, total_tokens=n_prompt + n_out)
        logprobs = (request.to_logprob(sampled),) if request.to_logprob is not None else None
        self._emit(request, GenerationDelta(text, (token,), finish, usage, logprobs, stop_reason))
        return request.finished

    def _retire(self, cancelled_only: bool) -> None:
        """Drop finished (and cancelled) rows from the batch: the last rows move into the holes they
        leave, so the decoder copies only the rows that move."""
        running = self._running
        alive = [not (r.cancelled or (r.finished and not cancelled_only)) for r in running]
        if all(alive):
            return
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
        (or, with `direct`, put them on the callers' queues from this thread)."""
        if not self._outbox:
            return
        outbox, self._outbox = self._outbox, []
        if direct:
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
        for request in waiting:
            self._emit(request, error)
        self._fail_running(error)


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
        """Block until everything handed over so far has been put."""
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
                items = self._batches.popleft()
                self._busy = True
            for out, item in items:
                out.put(item)
