"""Typed errors shared by the engine, tool calling and the server.

The server maps `InvalidRequestError` (and its subclasses) to HTTP 400 and `QueueFullError` to 429;
anything else that subclasses `RealizarError` is an engine-side failure. Messages are written for the
caller: they say what was wrong and what the limit is.
"""

from __future__ import annotations

__all__ = [
    "ContextLengthError",
    "EngineClosedError",
    "InvalidRequestError",
    "QueueFullError",
    "RealizarError",
]


class RealizarError(Exception):
    """Base class of every error realizar_ort raises on purpose."""


class InvalidRequestError(RealizarError, ValueError):
    """The request itself is wrong (bad parameter, token id out of range, ...). HTTP 400.

    `param` names the offending request field (OpenAI's `error.param`), or None.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class ContextLengthError(InvalidRequestError):
    """Prompt plus requested completion does not fit in the context window. HTTP 400."""

    def __init__(self, message: str, param: str | None = "messages") -> None:
        super().__init__(message, param)


class QueueFullError(RealizarError):
    """The engine's wait queue is at `max_queued`; retry later. HTTP 429 with Retry-After."""


class EngineClosedError(RealizarError):
    """The engine was closed (or its scheduler thread died); no new requests are accepted."""
