"""``POST /v1/completions``: the legacy text-completion route (eval harnesses, routers' model-server protocol).

Request path: body -> :func:`~.completions_request.validate_completion_request` -> one engine stream per
prompt (``ModelEngine.generate_stream``: the raw prompt, no chat template), all started at once so they
share the running batch, each driven in its own thread by :class:`~.bridge.ThreadedIterator` -> the
``text_completion`` chunks of every prompt (choice ``index`` = prompt position), merged as they come ->
SSE (``data: {...}`` then ``[DONE]``), or the fold of the same chunks. Errors before the first token
of every prompt are HTTP errors; after that, an SSE error event and ``[DONE]``. A client disconnect
cancels every engine request.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from realizar_ort.generation.sampling import SamplingParams

from .bridge import ThreadedIterator
from .completions_request import CompletionRequest, validate_completion_request
from .errors import APIError, to_api_error
from .protocol_fields import parse_json_body
from .sse import SSE_DONE, SSEResponse, sse_error, sse_event
from .state import LlmService, ServerState, read_body, run_unless_disconnected, state_of

__all__ = ["completions"]


async def completions(request: Request) -> Response:
    state = state_of(request)
    body = await read_body(request, state.config.server.max_body_bytes)
    req = validate_completion_request(parse_json_body(body))
    llm = state.require_llm(req.model)
    if req.max_tokens >= llm.max_context:
        raise APIError(400, f"max_tokens is too large: {req.max_tokens}. This model's context is "
                       f"{llm.max_context} tokens (prompt + completion).", "invalid_request_error",
                       "max_tokens", "context_length_exceeded")
    run = _CompletionRun(state, llm, req)
    started = await run_unless_disconnected(request, run.start, run.cancel)
    if started is None:
        return Response(status_code=499)
    if req.stream:
        return SSEResponse(_sse(run), on_disconnect=run.disconnected)

    async def fold() -> Response:
        chunks = [chunk async for chunk in run.chunks()]
        return Response(orjson.dumps(fold_completion_chunks(chunks, run.usage())), media_type="application/json")

    response = await run_unless_disconnected(request, fold, run.cancel)
    return response if response is not None else Response(status_code=499)


async def _sse(run: _CompletionRun) -> AsyncIterator[bytes]:
    try:
        async for chunk in run.chunks():
            yield sse_event(chunk)
    except Exception as exc:  # after the stream began: an error event, then [DONE]
        yield sse_error(to_api_error(exc))
        yield SSE_DONE
        return
    if run.req.include_usage:
        yield sse_event({**run.chunk([]), "usage": run.usage()})
    yield SSE_DONE


def fold_completion_chunks(chunks: list[dict[str, Any]], usage: dict[str, int]) -> dict[str, Any]:
    """The ``text_completion`` equivalent to a complete list of chunks."""
    texts: dict[int, list[str]] = {}
    logprobs: dict[int, dict[str, list[Any]] | None] = {}
    finish: dict[int, str | None] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            i = choice["index"]
            texts.setdefault(i, []).append(choice["text"])
            finish.setdefault(i, None)
            if choice.get("finish_reason") is not None:
                finish[i] = choice["finish_reason"]
            lp = choice.get("logprobs")
            if lp is not None:
                acc = logprobs.get(i) or {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
                for key in acc:
                    acc[key].extend(lp[key])
                logprobs[i] = acc
    first = chunks[0]
    choices = [{"text": "".join(texts[i]), "index": i, "logprobs": logprobs.get(i), "finish_reason": finish[i]}
               for i in sorted(texts)]
    return {"id": first["id"], "object": "text_completion", "created": first["created"], "model": first["model"],
            "system_fingerprint": None, "choices": choices, "usage": usage}


class _CompletionRun:
    """The engine streams of one request's prompts, turned into ``text_completion`` chunks."""

    def __init__(self, state: ServerState, llm: LlmService, req: CompletionRequest) -> None:
        self.state, self.llm, self.req = state, llm, req
        self.id = "cmpl-" + secrets.token_hex(12)
        self.created = int(time.time())
        self.params = SamplingParams(
            max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p, top_k=max(req.top_k, 0),
            min_p=req.min_p, presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty,
            repetition_penalty=req.repetition_penalty, seed=req.seed, stop=req.stop,
            logprobs=req.logprobs is not None, top_logprobs=req.logprobs or 0, ignore_eos=req.ignore_eos,
        )
        self.sources: list[ThreadedIterator[Any]] = []
        self.firsts: list[Any] = []
        self.usages: list[Any] = [None] * len(req.prompts)
        self.offsets = [0] * len(req.prompts)

    async def start(self) -> bool:
        """Queue every prompt and wait for each one's first delta (so setup errors are HTTP errors)."""
        engine, params = self.llm.engine, self.params
        try:
            for prompt in self.req.prompts:
                self.sources.append(ThreadedIterator(lambda p=prompt: engine.generate_stream(
                    p if isinstance(p, str) else list(p), params)))
            self.firsts = [await source.__anext__() for source in self.sources]
        except BaseException:
            self.cancel()
            raise
        return True

    def cancel(self) -> None:
        for source in self.sources:
            source.cancel()

    async def disconnected(self) -> None:
        self.cancel()
        self.state.metrics.cancelled.inc()

    def chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": self.llm.name,
                "system_fingerprint": None, "choices": choices}

    def usage(self) -> dict[str, int]:
        prompt = sum(u.prompt_tokens for u in self.usages if u is not None)
        completion = sum(u.completion_tokens for u in self.usages if u is not None)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        """Every prompt's chunks, in the order their deltas arrive."""
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        done = object()

        async def pump(i: int, source: ThreadedIterator[Any]) -> None:
            try:
                async for delta in source:
                    await queue.put((i, delta))
                await queue.put((i, done))
            except BaseException as exc:  # handed to the consumer
                await queue.put((i, exc))

        for i, first in enumerate(self.firsts):
            if self.req.echo:
                prompt = self.req.prompts[i]
                text = prompt if isinstance(prompt, str) else self.llm.engine.tokenizer.decode(list(prompt))
                self.offsets[i] = len(text)
                yield self.chunk([{"text": text, "index": i, "logprobs": None, "finish_reason": None}])
            choice = self._choice(i, first)
            if choice is not None:
                yield self.chunk([choice])
        pending = sum(1 for f in self.firsts if getattr(f, "finish_reason", None) is None)
        tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(self.sources)
                 if getattr(self.firsts[i], "finish_reason", None) is None]
        try:
            while pending:
                i, item = await queue.get()
                if item is done:
                    pending -= 1
                    continue
                if isinstance(item, BaseException):
                    raise item
                choice = self._choice(i, item)
                if choice is not None:
                    yield self.chunk([choice])
        finally:
            self.cancel()
            for task in tasks:
                task.cancel()
            self._count_tokens()

    def _choice(self, i: int, delta: Any) -> dict[str, Any] | None:
        if delta.usage is not None:
            self.usages[i] = delta.usage
        lp = None
        if self.req.logprobs is not None and delta.logprobs:
            lp = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
            for item in delta.logprobs:
                lp["tokens"].append(item.token)
                lp["token_logprobs"].append(item.logprob)
                lp["top_logprobs"].append({t.token: t.logprob for t in item.top_logprobs})
                lp["text_offset"].append(self.offsets[i])
                self.offsets[i] += len(item.token)
        if not delta.text and lp is None and delta.finish_reason is None:
            return None
        return {"text": delta.text, "index": i, "logprobs": lp, "finish_reason": delta.finish_reason}

    def _count_tokens(self) -> None:
        metrics, model = self.state.metrics, self.llm.name
        for usage in self.usages:
            if usage is not None:
                metrics.prompt_tokens.labels(model).inc(usage.prompt_tokens)
                metrics.generated_tokens.labels(model).inc(usage.completion_tokens)
