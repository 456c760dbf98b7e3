"""Graceful shutdown: on SIGTERM the server drains instead of cutting streams off.

The sequence (``[server].drain_timeout_s``, default 30 s):

1. At once: ``/ready`` answers 503 (a load balancer stops sending), and every new request other than the
   probes (``/health``, ``/ready``, ``/metrics``) gets a 503 ``server_shutting_down`` with ``Retry-After``.
2. Requests already in flight continue until they finish or the drain timeout passes.
3. What is still running then is stopped cleanly: each engine stream registered here (every
   :class:`~.bridge.ThreadedIterator` made while serving a request registers itself) raises
   :data:`SHUTDOWN_ERROR` into its consumer, so a streaming chat ends with a chunk carrying a
   ``finish_reason``, an ``event: error`` and ``data: [DONE]``, and a non-streaming one answers 503.
4. Then uvicorn shuts down as usual (listeners closed, idle connections closed, lifespan: engines closed).

A second SIGTERM or SIGINT skips the wait. :class:`Drain` is the app's bookkeeping (event loop only);
:class:`DrainingServer` is the ``uvicorn.Server`` that starts it on the signal (``begin_drain()`` does the
same from code, e.g. for :class:`~.live.LiveServer`, whose thread cannot receive signals).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
from types import FrameType
from typing import Any, Protocol

import uvicorn

from .errors import APIError

__all__ = ["PROBE_PATHS", "SHUTDOWN_ERROR", "Drain", "DrainingServer", "current_drain"]

log = logging.getLogger("realizar_ort.server")

PROBE_PATHS = frozenset({"/health", "/ready", "/metrics"})
ABORT_GRACE_S = 5.0  # after aborting, how long the aborted responses get to send their last bytes


def _shutting_down(message: str) -> APIError:
    return APIError(503, message, "service_unavailable", None, "server_shutting_down", {"Retry-After": "1"})


SHUTDOWN_ERROR = _shutting_down("The server is shutting down: this request was stopped at the end of the drain "
                                "timeout. Retry on another replica.")
REFUSED_ERROR = _shutting_down("The server is shutting down and accepts no new requests; retry on another replica.")


class Abortable(Protocol):
    def abort(self, error: APIError) -> None: ...


_current: contextvars.ContextVar[Drain | None] = contextvars.ContextVar("realizar_drain", default=None)


def current_drain() -> Drain | None:
    """The drain of the app serving the current request (None outside a request)."""
    return _current.get()


class Drain:
    """In-flight requests and their abortable engine streams; the state of a shutdown. Event loop only."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.draining = False
        self.in_flight = 0
        self._streams: set[Abortable] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    # ---- per request (called by the app's middleware) -----------------------------------------------
    def enter(self) -> contextvars.Token[Drain | None]:
        self.in_flight += 1
        self._idle.clear()
        return _current.set(self)

    def exit(self, token: contextvars.Token[Drain | None]) -> None:
        _current.reset(token)
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    def register(self, stream: Abortable) -> None:
        self._streams.add(stream)

    def unregister(self, stream: Abortable) -> None:
        self._streams.discard(stream)

    # ---- the shutdown ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Refuse new work, wait up to the timeout for in-flight requests, abort the rest, wait for them."""
        self.draining = True
        log.info("draining: %d request(s) in flight, waiting up to %.1f s", self.in_flight, self.timeout_s)
        if await self._wait_idle(self.timeout_s):
            return
        log.warning("drain timeout: stopping %d request(s) still in flight", self.in_flight)
        for stream in list(self._streams):
            stream.abort(SHUTDOWN_ERROR)
        if not await self._wait_idle(ABORT_GRACE_S):
            log.warning("%d request(s) did not stop within %.1f s of the abort", self.in_flight, ABORT_GRACE_S)

    async def _wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


class DrainingServer(uvicorn.Server):
    """``uvicorn.Server`` that drains ``drain`` on SIGTERM (or :meth:`begin_drain`) before shutting down."""

    def __init__(self, config: uvicorn.Config, drain: Drain) -> None:
        super().__init__(config)
        self.drain = drain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task[None] | None = None

    async def startup(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not self.drain.draining and not self.should_exit and self._loop is not None:
            self._captured_signals.append(sig)  # re-raised after shutdown, as uvicorn does
            self._loop.call_soon_threadsafe(self._start_drain)
            return
        super().handle_exit(sig, frame)

    def begin_drain(self) -> None:
        """Start the drain from any thread (what SIGTERM does)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        if self.drain.draining or self.should_exit:
            return
        self.drain.draining = True  # at once: /ready and new requests see it before the task runs

        async def drain_then_exit() -> None:
            try:
                await self.drain.run()
            finally:
                self.should_exit = True

        self._drain_task = asyncio.get_running_loop().create_task(drain_then_exit())
