"""``POST /v1/chat/completions``: validate, build the sampling params, stream (or fold) the engine's deltas.

Request path: body (size-limited) -> :func:`~.protocol.validate_chat_request` -> model lookup ->
``SamplingParams`` (+ a ``JsonGrammar`` for ``response_format``, compiled off the loop) -> the engine's
stream (plain, or through tool calling when ``tools`` are given) driven in its own thread by
:class:`~.bridge.ThreadedIterator` -> :class:`~.chat_format.ChunkBuilder` -> SSE, or the fold of the same
chunks. Errors before the first chunk are ordinary HTTP errors; after it, an SSE error event and
``[DONE]``. A client disconnect cancels the engine request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response

from realizar_ort.generation.sampling import SamplingParams

from .bridge import ThreadedIterator
from .chat_format import ChunkBuilder, ToolCallFragment, fold_chunks, usage_dict
from .errors import APIError, invalid, to_api_error
from .protocol import ChatCompletionRequest, parse_json_body, validate_chat_request
from .sse import SSE_DONE, SSEResponse, sse_error, sse_event
from .state import LlmService, ServerState, read_body, run_unless_disconnected, state_of

__all__ = ["chat_completions", "sampling_params", "start_completion"]

log = logging.getLogger("realizar_ort.server")


async def chat_completions(request: Request) -> Response:
    state = state_of(request)
    arrived = time.perf_counter()
    body = await read_body(request, state.config.server.max_body_bytes)
    server = state.config.server
    req = validate_chat_request(parse_json_body(body), max_tools=server.max_tools,
                                max_schema_bytes=server.max_schema_bytes)
    started = await start_completion(request, state, req, arrived)
    if started is None:
        return Response(status_code=499)
    first, chunks, run = started
    if req.stream:
        return SSEResponse(_sse(first, chunks, run), on_disconnect=run.disconnected)

    async def fold() -> Response:
        collected = [first]
        async for chunk in chunks:
            collected.append(chunk)
        completion = fold_chunks(collected, usage_dict(run.usage) if run.usage else _no_usage())
        return Response(orjson.dumps(completion), media_type="application/json")

    response = await run_unless_disconnected(request, fold, run.disconnected_now)
    return response if response is not None else Response(status_code=499)


async def start_completion(request: Request, state: ServerState, req: ChatCompletionRequest, arrived: float,
                           ) -> tuple[dict[str, Any], AsyncIterator[dict[str, Any]], _Run] | None:
    """Start ``req`` on the engine (the one path of chat and responses) and wait for its first chunk.

    Returns the first chunk, the iterator of the rest and the run (usage, cancellation), or None when the
    client hung up first. Errors up to the first chunk raise (plain HTTP errors)."""
    llm = state.require_llm(req.model)
    if req.max_tokens is not None and req.max_tokens >= llm.max_context:
        raise APIError(400, f"max_tokens is too large: {req.max_tokens}. This model's context is "
                       f"{llm.max_context} tokens (prompt + completion).", "invalid_request_error",
                       "max_tokens", "context_length_exceeded")
    if req.uses_tools and req.logprobs:
        raise invalid("logprobs are not available for requests with tools or tool messages.", "logprobs")
    prompt_ids = await _counted_prompt(llm, req)  # cheap checks first: before any grammar is compiled
    params = await _params_with_grammar(req, llm, state)
    source = ThreadedIterator(_open_source(llm, req, params, prompt_ids))
    run = _Run(state, llm, req, source, arrived)
    chunks = run.chunks()
    try:  # errors up to the first chunk are plain HTTP errors; a hang-up while queued cancels at once
        first = await run_unless_disconnected(request, chunks.__anext__, run.disconnected_now)
    except StopAsyncIteration:  # pragma: no cover - the engine always sends a final delta
        raise APIError(500, "The model produced no output.", "internal_error") from None
    except BaseException:
        await chunks.aclose()
        raise
    if first is None:
        await chunks.aclose()
        return None
    return first, chunks, run


def _no_usage() -> dict[str, Any]:
    return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
            "prompt_tokens_details": {"cached_tokens": 0}}


# The finish reason of a stream cut short by an error (a shutdown's drain timeout, an engine failure):
# "length" is the one OpenAI's clients read as "the answer is incomplete"; the error event says why.
CUT_SHORT_FINISH_REASON = "length"


async def _sse(first: dict[str, Any], chunks: AsyncIterator[dict[str, Any]], run: _Run) -> AsyncIterator[bytes]:
    yield sse_event(first)
    finished = _finish_reason(first) is not None
    try:
        async for chunk in chunks:
            finished = finished or _finish_reason(chunk) is not None
            yield sse_event(chunk)
    except Exception as exc:  # after the stream began: a finish reason, an error event, then [DONE]
        if not finished:
            for last in run.builder.delta(finish_reason=CUT_SHORT_FINISH_REASON):
                yield sse_event(last)
        yield sse_error(to_api_error(exc))
        yield SSE_DONE
        return
    if run.req.include_usage and run.usage is not None:
        yield sse_event(run.builder.usage_chunk(run.usage))
    yield SSE_DONE


def _finish_reason(chunk: dict[str, Any]) -> str | None:
    choices = chunk.get("choices") or ()
    return choices[0].get("finish_reason") if choices else None


def sampling_params(req: ChatCompletionRequest, processors: tuple[Any, ...] = ()) -> SamplingParams:
    """The engine's ``SamplingParams`` for a validated request (its own checks raise 400s naming the field)."""
    return SamplingParams(
        max_tokens=req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=max(req.top_k, 0),
        min_p=req.min_p,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        repetition_penalty=req.repetition_penalty,
        seed=req.seed,
        stop=req.stop,
        logprobs=req.logprobs,
        top_logprobs=req.top_logprobs,
        logit_processors=processors,
        ignore_eos=req.ignore_eos,
        fast_forward=req.fast_forward,
    )


async def _params_with_grammar(req: ChatCompletionRequest, llm: LlmService, state: ServerState) -> SamplingParams:
    if req.response_format is None or req.uses_tools:  # with tools, the tool sampler enforces the format
        return sampling_params(req)
    if llm.json_mode is None:
        raise invalid("response_format json_object/json_schema is not available: the grammar module is not "
                      "installed on this server.", "response_format")
    fmt = req.response_format
    json_mode = llm.json_mode
    try:
        processor = await anyio.to_thread.run_sync(json_mode.processor, fmt)
    except Exception as exc:
        param = "response_format.json_schema.schema" if fmt.type == "json_schema" else "response_format"
        raise to_api_error(exc, schema_param=param) from None
    return sampling_params(req, (processor,))


async def _counted_prompt(llm: LlmService, req: ChatCompletionRequest) -> list[int] | None:
    """The plain chat prompt's token ids, refused now (ContextLengthError, a 400) when prompt + max_tokens
    does not fit, so a long prompt never waits for a grammar compile. Tool turns do the same inside
    ``generate_with_tools_stream``; None for engines without ``check_context`` (they check when queued)."""
    engine = llm.engine
    if req.uses_tools or not hasattr(engine, "check_context"):
        return None

    def count() -> list[int]:
        ids: list[int] = engine.encode_prompt(engine.render_chat([dict(m) for m in req.messages],
                                                                 **req.chat_template_kwargs))
        engine.check_context(len(ids), sampling_params(req))
        return ids

    return await anyio.to_thread.run_sync(count)


def _open_source(llm: LlmService, req: ChatCompletionRequest, params: SamplingParams,
                 prompt_ids: list[int] | None = None) -> Callable[[], Iterator[Any]]:
    messages = [dict(m) for m in req.messages]
    if req.uses_tools:
        try:
            from realizar_ort.tools.generate import generate_with_tools_stream
        except ImportError:
            raise invalid("tools are not available on this server (realizar_ort.tools.generate is missing).",
                          "tools") from None

        tools = [dict(t) for t in req.tools]
        fmt = req.response_format
        answer = None if fmt is None else (fmt.schema if fmt.type == "json_schema" and fmt.schema else {"type": "object"})
        return lambda: generate_with_tools_stream(llm.engine, messages, tools, req.tool_choice,
                                                  req.parallel_tool_calls, params, answer, req.chat_template_kwargs)
    if prompt_ids is not None:
        return lambda: llm.engine.generate_stream(prompt_ids, params)
    return lambda: llm.engine.chat_stream(messages, params, **req.chat_template_kwargs)


@dataclass
class _Run:
    """One completion in flight: turns engine deltas into chunks and records its metrics."""

    state: ServerState
    llm: LlmService
    req: ChatCompletionRequest
    source: ThreadedIterator[Any]
    arrived: float
    usage: Any = None

    def __post_init__(self) -> None:
        self.builder = ChunkBuilder(model=self.llm.name, include_usage=self.req.include_usage,
                                    want_logprobs=self.req.logprobs, system_fingerprint=self.llm.fingerprint)
        self._tokens_seen = 0
        self._last_token_at: float | None = None
        self._complete = False  # the engine's deltas were read to the end
        self._cancel_counted = False

    async def disconnected(self) -> None:
        self.disconnected_now()

    def disconnected_now(self) -> None:
        """The client hung up: drop the engine request at its next step (counted once however we learn it)."""
        self.source.cancel()
        if not self._complete and not self._cancel_counted:
            self._cancel_counted = True
            self.state.metrics.cancelled.inc()

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        metrics = self.state.metrics
        model = self.llm.name
        try:
            async for delta in self.source:
                n = len(getattr(delta, "token_ids", ()) or ()) - getattr(delta, "replaces", 0)  # healed: net
                if n:
                    self._observe_tokens(n)
                chunks = self.builder.delta(
                    content=_text(delta),
                    tool_calls=_tool_fragments(delta),
                    logprobs=getattr(delta, "logprobs", None),
                    finish_reason=getattr(delta, "finish_reason", None),
                )
                if getattr(delta, "usage", None) is not None:
                    self.usage = delta.usage
                for chunk in chunks:
                    yield chunk
            self._complete = True
        except (GeneratorExit, anyio.get_cancelled_exc_class()):
            # closed or cancelled before the engine finished: the client went away by a path that sent no
            # http.disconnect (a proxy that cancels the request task, a send that failed under us)
            self.disconnected_now()
            raise
        finally:
            self.source.cancel()
            if self.usage is not None:
                metrics.prompt_tokens.labels(model).inc(self.usage.prompt_tokens)
                rest = self.usage.completion_tokens - self._tokens_seen
                if rest > 0:
                    metrics.generated_tokens.labels(model).inc(rest)

    def _observe_tokens(self, n: int) -> None:
        now = time.perf_counter()
        metrics = self.state.metrics
        if self._last_token_at is None:
            metrics.ttft.observe(now - self.arrived)
        else:
            metrics.itl.observe((now - self._last_token_at) / n)
        self._last_token_at = now
        self._tokens_seen += n
        metrics.generated_tokens.labels(self.llm.name).inc(n)


def _text(delta: Any) -> str:
    text = getattr(delta, "text", None)
    if text is None:
        text = getattr(delta, "content", None)
    return text or ""


def _tool_fragments(delta: Any) -> list[ToolCallFragment]:
    """Tool-call fragments of a tool-generation delta (none for a plain engine delta)."""
    calls = getattr(delta, "tool_calls", None) or ()
    fragments = []
    for c in calls:
        fragments.append(ToolCallFragment(
            index=c.index, arguments=getattr(c, "arguments", "") or "",
            id=getattr(c, "id", None), name=getattr(c, "name", None),
        ))
    return fragments
