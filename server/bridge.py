"""Bridge a blocking engine iterator onto the event loop without blocking it.

The engine's streams are plain generators that block while the scheduler thread produces the next token.
:class:`ThreadedIterator` drives one in a dedicated daemon thread and hands each item to the event loop
with ``call_soon_threadsafe`` (one loop wake-up per item, no thread-pool hop per token). Cancelling
(``aclose`` or a cancelled ``__anext__``) sets a flag the thread checks after every item, then the thread
closes the generator, which cancels the engine request and frees its batch slot. If the source has a
``cancel()`` method it is called at once as well, so a request still waiting for its first token is
dropped without waiting for it.

Made while serving a request, it registers with the app's shutdown drain (:mod:`.shutdown`): at the end of
the drain timeout :meth:`ThreadedIterator.abort` raises the shutdown error into the consumer at its next
item and cancels the engine request.

Cost: one OS thread per in-flight request (the engine bounds them with its queue limit).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .shutdown import current_drain

__all__ = ["ThreadedIterator"]

T = TypeVar("T")

_END = object()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class ThreadedIterator(Generic[T]):
    """Async iterator over ``open_source()``'s items, produced in a dedicated thread."""

    def __init__(self, open_source: Callable[[], Iterator[T]], *, name: str = "realizar-stream") -> None:
        self._open_source = open_source
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._cancelled = threading.Event()
        self._source: Iterator[T] | None = None
        self._finished = False
        self._drain = current_drain()
        if self._drain is not None:
            self._drain.register(self)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ---- producer thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        source = None
        try:
            source = self._open_source()
            self._source = source
            if self._cancelled.is_set():
                return
            for item in source:
                self._put(item)
                if self._cancelled.is_set():
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which maps it
            self._put(_Failure(exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # pragma: no cover - closing must never kill the thread silently
                    pass

    def _put(self, item: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: the server is shutting down
            self._cancelled.set()

    # ---- consumer (event loop) ----------------------------------------------------------------------
    def __aiter__(self) -> ThreadedIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self._finished:
            raise StopAsyncIteration
        try:
            item = await self._queue.get()
        except BaseException:
            self.cancel()
            raise
        if item is _END:
            self._finish()
            raise StopAsyncIteration
        if isinstance(item, _Failure):
            self._finish()
            raise item.exc
        return item

    def _finish(self) -> None:
        self._finished = True
        if self._drain is not None:
            self._drain.unregister(self)

    def abort(self, error: BaseException) -> None:
        """Event loop only: the consumer's next ``__anext__`` raises ``error`` (after the items already
        queued), and the engine request is cancelled."""
        if self._finished:
            return
        self._queue.put_nowait(_Failure(error))
        self._cancelled.set()
        self._cancel_source()

    def cancel(self) -> None:
        """Stop the stream: the engine request is cancelled at its next step (or at once if it can be)."""
        if self._finished and self._cancelled.is_set():
            return
        self._finish()
        self._cancelled.set()
        self._cancel_source()

    def _cancel_source(self) -> None:
        cancel = getattr(self._source, "cancel", None)
        if cancel is not None:
            try:
                cancel()
            except Exception:  # pragma: no cover - best effort; the thread still closes the generator
                pass

    async def aclose(self) -> None:
        self.cancel()
