"""Server-sent events: the byte framing of a chat stream, and the ASGI response that sends it.

Framing follows OpenAI: one ``data: {json}\\n\\n`` event per chunk, then ``data: [DONE]\\n\\n``. An error
after the stream began is an ``event: error`` whose data is the usual error body, followed by
``[DONE]`` (the openai client raises ``APIError`` on it).

:class:`SSEResponse` runs the chunk producer and a disconnect listener side by side: when the client goes
away the producer is cancelled at once (even while it waits for the next token), so the request's
``finally`` blocks release its batch slot.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import orjson
from starlette.types import Receive, Scope, Send

from .errors import APIError

__all__ = ["SSE_DONE", "SSEResponse", "sse_error", "sse_event"]

SSE_DONE = b"data: [DONE]\n\n"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_error(error: APIError) -> bytes:
    return b"event: error\ndata: " + orjson.dumps(error.body()) + b"\n\n"


class SSEResponse:
    """An ASGI response streaming ``events`` (already framed bytes) until it ends or the client leaves.

    ``on_disconnect`` is called (once) when the client disconnects before the stream ended, or when the
    request task is cancelled.
    """

    def __init__(self, events: AsyncIterator[bytes], *, on_disconnect: Callable[[], Awaitable[None]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.events = events
        self.on_disconnect = on_disconnect
        self.raw_headers = list(SSE_HEADERS) + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        self.status_code = 200

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._run(receive, send)
        except anyio.get_cancelled_exc_class():
            # The server cancelled the request task (a proxy such as Ray Serve's does this when the client
            # hangs up, instead of sending http.disconnect): the same as a disconnect.
            if self.on_disconnect is not None:
                with anyio.CancelScope(shield=True):
                    await self.on_disconnect()
            raise

    async def _run(self, receive: Receive, send: Send) -> None:
        disconnected = False
        complete = False  # the last body message was sent: a disconnect after it is no cancellation
        failure: list[BaseException] = []
        async with anyio.create_task_group() as tg:

            async def listen() -> None:
                nonlocal disconnected
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        disconnected = not complete
                        tg.cancel_scope.cancel()
                        return

            async def stream() -> None:
                nonlocal disconnected, complete
                try:
                    await send({"type": "http.response.start", "status": self.status_code,
                                "headers": self.raw_headers})
                    async for chunk in self.events:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    complete = True  # set before the send: the server reports a disconnect once it is done
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except OSError:  # the transport broke under us: same as a disconnect
                    disconnected = True
                except Exception as exc:  # re-raised below, unwrapped from the task group
                    failure.append(exc)
                finally:
                    aclose = getattr(self.events, "aclose", None)
                    if aclose is not None:
                        with anyio.CancelScope(shield=True):
                            await aclose()
                tg.cancel_scope.cancel()

            tg.start_soon(listen)
            tg.start_soon(stream)
        if disconnected and self.on_disconnect is not None:
            await self.on_disconnect()
        if failure:
            raise failure[0]
