"""The one mapping from anything that can go wrong to OpenAI's error body.

Every response the server sends for a failure has the shape
``{"error": {"message": str, "type": str, "param": str | None, "code": str | None}}``. Client mistakes are
4xx with a message that says what was wrong; anything unexpected is a 500 with a generic message (the
traceback goes to the log, never to the client).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import orjson
from starlette.responses import Response

from realizar_ort.errors import (
    ContextLengthError,
    EngineClosedError,
    InvalidRequestError,
    QueueFullError,
    RealizarError,
)

__all__ = [
    "INTERNAL_ERROR_MESSAGE",
    "APIError",
    "error_body",
    "error_response",
    "to_api_error",
]

log = logging.getLogger("realizar_ort.server")

INTERNAL_ERROR_MESSAGE = "The server had an error while processing your request; it has been logged."
RETRY_AFTER_SECONDS = "1"


@dataclass
class APIError(Exception):
    """An error with its HTTP status and OpenAI error fields; raised by handlers and validators."""

    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 ``invalid_request_error``: the shorthand every validator uses."""
    return APIError(400, message, "invalid_request_error", param, code)


def _grammar_errors() -> tuple[type[BaseException], ...]:
    """The grammar's error types (imported on first use, so that importing the server stays cheap)."""
    from realizar_ort import GrammarError, UnsupportedSchemaError

    return (UnsupportedSchemaError, GrammarError)


def to_api_error(exc: BaseException, *, schema_param: str | None = None) -> APIError:
    """Map any exception to the :class:`APIError` the client sees (logging unexpected ones).

    ``schema_param`` names the request field whose JSON Schema was being compiled, so a schema the
    grammar refuses is reported against it (``response_format`` or ``tools``).
    """
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, ContextLengthError):
        return APIError(400, exc.message, "invalid_request_error", exc.param, "context_length_exceeded")
    if isinstance(exc, InvalidRequestError):
        return APIError(400, exc.message, "invalid_request_error", exc.param, None)
    if isinstance(exc, QueueFullError):
        return APIError(
            429, str(exc) or "The server is at capacity; retry later.", "rate_limit_error", None, "queue_full",
            {"Retry-After": RETRY_AFTER_SECONDS},
        )
    if isinstance(exc, EngineClosedError):
        return APIError(
            503, "The model engine is not running; retry later.", "service_unavailable", None, "engine_closed",
            {"Retry-After": RETRY_AFTER_SECONDS},
        )
    grammar_errors = _grammar_errors()
    if grammar_errors and isinstance(exc, grammar_errors):
        return APIError(400, str(exc), "invalid_request_error", schema_param, "unsupported_schema")
    if isinstance(exc, RealizarError):
        log.error("engine error: %s", exc, exc_info=exc)
        return APIError(500, INTERNAL_ERROR_MESSAGE, "internal_error", None, None)
    log.error("unexpected error while serving a request", exc_info=exc)
    return APIError(500, INTERNAL_ERROR_MESSAGE, "internal_error", None, None)


def error_body(error: APIError) -> bytes:
    return orjson.dumps(error.body())


def error_response(error: APIError) -> Response:
    return Response(error_body(error), status_code=error.status, headers=error.headers,
                    media_type="application/json")
