"""A deadline on reading a request's body: a client that trickles its body (a few bytes a second) gets a
408 and its connection is closed, instead of holding a connection and a handler as long as it likes.

:func:`timed_receive` wraps an ASGI ``receive``: until the body's last message has arrived, every call must
return before ``started + timeout_s`` (one deadline for the whole body, not per chunk, so trickling does
not reset it); past that it raises :class:`BodyTimeoutError`, an :class:`~.errors.APIError` 408 with
``Connection: close`` (uvicorn then closes the connection after the answer). After the body, ``receive``
is passed through untouched (routes wait on it for a disconnect). Applied by the app's middleware to every
route. Cost: one cancel scope per body message.
"""

from __future__ import annotations

import time

import anyio
from starlette.types import Message, Receive

from .errors import APIError

__all__ = ["BodyTimeoutError", "timed_receive"]


class BodyTimeoutError(APIError):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(408, f"The request body was not received within {timeout_s:g} s.", "invalid_request_error",
                         None, "request_timeout", {"Connection": "close"})


def timed_receive(receive: Receive, timeout_s: float) -> Receive:
    """``receive`` with a deadline of ``timeout_s`` from now on the whole request body."""
    deadline = time.monotonic() + timeout_s
    body_done = False

    async def receive_with_deadline() -> Message:
        nonlocal body_done
        if body_done:
            return await receive()
        with anyio.move_on_after(deadline - time.monotonic()) as scope:
            message = await receive()
        if scope.cancelled_caught:
            raise BodyTimeoutError(timeout_s)
        if message["type"] != "http.request" or not message.get("more_body", False):
            body_done = True
        return message

    return receive_with_deadline
