"""``POST /v1/responses``: OpenAI's Responses API, stateless, on the chat route's engine path.

Request path: body -> :func:`~.responses_request.validate_responses_request` (a chat request plus what the
response echoes) -> :func:`~.chat.start_completion` (the same prompt, tool grammar, JSON modes and
sampling as ``/v1/chat/completions``) -> its chunks -> :class:`~.responses_events.ResponseBuilder` ->
SSE events (``event: <type>``), or the ``response`` that ``response.completed`` carries. Errors before
the first token are HTTP errors; after it, an SSE ``error`` event ends the stream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .chat import start_completion
from .chat_format import usage_dict
from .errors import to_api_error
from .protocol_fields import parse_json_body
from .responses_events import ResponseBuilder
from .responses_request import validate_responses_request
from .sse import SSEResponse, sse_error
from .state import read_body, run_unless_disconnected, state_of

__all__ = ["create_response"]

log = logging.getLogger("realizar_ort.server")


async def create_response(request: Request) -> Response:
    state = state_of(request)
    arrived = time.perf_counter()
    body = await read_body(request, state.config.server.max_body_bytes)
    req = validate_responses_request(parse_json_body(body))
    for warning in req.warnings:
        log.info("responses: %s", warning)
    started = await start_completion(request, state, req.chat, arrived)
    if started is None:
        return Response(status_code=499)
    first, chunks, run = started
    builder = ResponseBuilder(req, run.llm.name)

    def usage() -> dict[str, int] | None:
        return usage_dict(run.usage) if run.usage is not None else None

    if req.chat.stream:
        async def events() -> AsyncIterator[bytes]:
            for event in builder.start() + builder.chunk(first):
                yield _frame(event)
            try:
                async for chunk in chunks:
                    for event in builder.chunk(chunk):
                        yield _frame(event)
            except Exception as exc:  # after the stream began: an error event ends it
                yield sse_error(to_api_error(exc))
                return
            for event in builder.finish(usage()):
                yield _frame(event)

        return SSEResponse(events(), on_disconnect=run.disconnected)

    async def fold() -> Response:
        builder.chunk(first)
        async for chunk in chunks:
            builder.chunk(chunk)
        final = builder.finish(usage())[-1]["response"]
        return Response(orjson.dumps(final), media_type="application/json")

    response = await run_unless_disconnected(request, fold, run.disconnected_now)
    return response if response is not None else Response(status_code=499)


def _frame(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
