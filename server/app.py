"""The Starlette app: routes, the lifespan that loads the engines once, auth, request metrics, error mapping.

``create_app(config)`` loads the models named in ``config`` when the server starts (in a worker thread)
and closes them when it stops; tests and embedders of the server may pass ready engines instead
(``llm=``, ``embedder=``), which the app then uses but does not close.

Routes: ``POST /v1/chat/completions``, ``POST /v1/responses``, ``POST /v1/completions``,
``POST /v1/embeddings``, ``GET /v1/models[/{model}]``,
``POST /tokenize`` / ``POST /detokenize`` (vLLM's: the exact prompt text and ids a request gives),
``GET /health`` (liveness: the process answers), ``GET /ready`` (readiness: models loaded, engine
running), ``GET /metrics`` (Prometheus). With ``[server].api_keys`` set, every ``/v1/`` route and
``/tokenize`` / ``/detokenize`` need ``Authorization: Bearer <key>``; health, readiness and metrics stay open for probes and scrapers.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from realizar_ort.config import Config, SessionConfig
from realizar_ort.onnx_session import available_providers

from .body_timeout import timed_receive
from .chat import chat_completions
from .completions import completions
from .embeddings import embeddings
from .errors import APIError, error_body, error_response, to_api_error
from .json_mode import JsonModeService
from .metrics import CONTENT_TYPE, ServerMetrics
from .models_route import list_models, retrieve_model
from .responses import create_response
from .shutdown import PROBE_PATHS, REFUSED_ERROR
from .state import EmbeddingService, LlmService, ServerState, state_of, system_fingerprint
from .tokenize import detokenize, tokenize

__all__ = ["create_app", "engine_provider"]

log = logging.getLogger("realizar_ort.server")

Endpoint = Callable[[Request], Awaitable[Response]]
_ROUTE_LABELS = {
    "/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/embeddings", "/v1/models", "/health",
    "/ready", "/metrics", "/tokenize", "/detokenize",
}
_KEYED_ROOT_ROUTES = {"/tokenize", "/detokenize"}  # outside /v1/ (vLLM's paths) but behind the API keys too


def create_app(config: Config, *, llm: Any = None, embedder: Any = None) -> Starlette:
    """The ASGI app serving ``config``'s models (or the given engines, which the caller keeps owning)."""
    def engine_stats() -> dict[str, Any] | None:  # read at scrape time, once `state` exists
        if state.llm is None or not hasattr(state.llm.engine, "stats"):
            return None
        return state.llm.engine.stats()  # type: ignore[no-any-return]

    state = ServerState(config=config, metrics=ServerMetrics(engine_stats))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(_load_models, state, llm, embedder)
        state.ready = True
        try:
            yield
        finally:
            state.ready = False
            for engine in state.owned:
                await anyio.to_thread.run_sync(engine.close)

    routes = [
        Route("/v1/chat/completions", _guard(chat_completions), methods=["POST"]),
        Route("/v1/responses", _guard(create_response), methods=["POST"]),
        Route("/v1/completions", _guard(completions), methods=["POST"]),
        Route("/v1/embeddings", _guard(embeddings), methods=["POST"]),
        Route("/v1/models", _guard(list_models), methods=["GET"]),
        Route("/v1/models/{model:path}", _guard(retrieve_model), methods=["GET"]),
        Route("/tokenize", _guard(tokenize), methods=["POST"]),
        Route("/detokenize", _guard(detokenize), methods=["POST"]),
        Route("/health", _guard(health), methods=["GET"]),
        Route("/ready", _guard(ready), methods=["GET"]),
        Route("/metrics", _guard(metrics_route), methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_exception})
    app.state.realizar = state
    app.add_middleware(_Gateway, state=state)  # type: ignore[arg-type]
    return app


# ---- model loading (worker thread, at startup) ----------------------------------------------------------


def _load_models(state: ServerState, llm: Any, embedder: Any) -> None:
    config = state.config
    if llm is None and config.llm is not None:
        from realizar_ort.generation.engine import ModelEngine

        llm = ModelEngine.from_config(config.llm)
        state.owned.append(llm)
    if llm is not None:
        name = (config.llm.name or config.llm.path.name) if config.llm else llm.manifest.name
        max_context = getattr(llm, "max_context", None) or (
            config.llm.max_context if config.llm else llm.manifest.llm.context_length)
        state.llm = LlmService(engine=llm, name=name, max_context=max_context,
                               json_mode=_json_mode(llm, config, state.metrics),
                               fingerprint=system_fingerprint(llm.manifest, config.llm))
        log.info("loaded chat model %s on %s (max_batch_size %s, max_context %s)", name,
                 engine_provider(llm, config.llm.session if config.llm else None),
                 config.llm.max_batch_size if config.llm else "?", max_context)
    if embedder is None and config.embedding is not None:
        from realizar_ort.embeddings.engine import EmbeddingEngine

        embedder = EmbeddingEngine.from_folder(config.embedding.path, config.embedding)
        state.owned.append(embedder)
    if embedder is not None:
        name = (config.embedding.name or config.embedding.path.name) if config.embedding else embedder.manifest.name
        dims = embedder.manifest.embedding.embedding_dim
        state.embedding = EmbeddingService(engine=embedder, name=name, dimensions=dims)
        log.info("loaded embedding model %s on %s (%d dimensions)", name,
                 engine_provider(embedder, config.embedding.session if config.embedding else None), dims)
    if state.llm is None and state.embedding is None:
        log.warning("no models configured: every /v1 route will answer 404")


def _json_mode(engine: Any, config: Config, metrics: ServerMetrics) -> JsonModeService | None:
    """The JSON-mode service for ``engine``, or None when the engine does not say where its tokenizer is."""
    folder = config.llm.path if config.llm else getattr(engine, "model_dir", None) or getattr(engine, "folder", None)
    spec = getattr(engine.manifest, "llm", None)
    if folder is None or spec is None:
        log.warning("the chat engine does not say where its tokenizer is: response_format JSON modes are disabled")
        return None
    model_dir = Path(folder)
    budget = config.llm.grammar_compile_budget_s if config.llm else 5.0
    healing = config.llm.fast_forward_healing if config.llm else False
    service = JsonModeService(model_dir, spec.vocab_size, spec.eos_token_ids, metrics, compile_budget_s=budget,
                              fast_forward_healing=healing)
    service.warm_up()  # token tables and mask kernels ready now, not on the first JSON request
    return service


def engine_provider(engine: Any, session: SessionConfig | None = None) -> str:
    """The execution provider an engine runs on, for the startup log: the engine's own answer when it
    has one, else what ``create_session`` picks from its config (the first requested provider available)."""
    for attr in ("provider", "execution_provider"):
        value = getattr(engine, attr, None)
        if isinstance(value, str):
            return value
    requested = session.providers if session is not None else ("CPUExecutionProvider",)
    available = available_providers()
    return next((p for p in requested if p in available), "CPUExecutionProvider")


# ---- small routes ---------------------------------------------------------------------------------------


async def health(request: Request) -> Response:
    return Response(orjson.dumps({"status": "ok"}), media_type="application/json")


async def ready(request: Request) -> Response:
    state = state_of(request)
    problems = []
    if state.drain.draining:
        problems.append("the server is shutting down")
    elif not state.ready:
        problems.append("models are not loaded")
    elif state.llm is not None and hasattr(state.llm.engine, "stats"):
        try:
            state.llm.engine.stats()
        except Exception as exc:  # a closed engine or a dead scheduler thread
            problems.append(f"chat engine unavailable: {type(exc).__name__}")
    body = {"status": "ready" if not problems else "not_ready", "models": state.model_names(), "problems": problems}
    return Response(orjson.dumps(body), status_code=200 if not problems else 503, media_type="application/json")


async def metrics_route(request: Request) -> Response:
    return Response(state_of(request).metrics.render(), media_type=CONTENT_TYPE)


# ---- error mapping, auth and request metrics ------------------------------------------------------------


def _guard(endpoint: Endpoint) -> Endpoint:
    """Every handler's exceptions become the one OpenAI error body (never a traceback)."""

    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as exc:
            return error_response(to_api_error(exc))

    guarded.__name__ = endpoint.__name__
    return guarded


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        error = APIError(405, f"Method {request.method} is not allowed for {request.url.path}.",
                         "invalid_request_error", None, "method_not_allowed", dict(exc.headers or {}))
    elif exc.status_code == 404:
        error = APIError(404, f"Unknown route: {request.method} {request.url.path}.", "invalid_request_error",
                         None, "not_found")
    else:
        error = APIError(exc.status_code, str(exc.detail), "invalid_request_error")
    return error_response(error)


class _Gateway:
    """Pure ASGI middleware for every route: bearer-token auth for ``/v1/``, per-route request metrics, the
    body-read deadline (.body_timeout) and shutdown draining (.shutdown: new requests refused with 503 once
    draining, in-flight ones counted)."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state
        self.keys = tuple(k.encode() for k in state.config.server.api_keys)
        self.body_timeout_s = state.config.server.body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = path if path in _ROUTE_LABELS else ("/v1/models/{model}" if path.startswith("/v1/models/")
                                                    else "other")
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_status(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        drain = self.state.drain
        token = None
        try:
            if self.keys and (path.startswith("/v1/") or path in _KEYED_ROOT_ROUTES) and not self._authorized(scope):
                error = APIError(401, "Incorrect or missing API key: send `Authorization: Bearer <key>`.",
                                 "invalid_request_error", None, "invalid_api_key",
                                 {"www-authenticate": "Bearer"})
                await _send_error(send_with_status, error)
                return
            if path not in PROBE_PATHS:
                if drain.draining:
                    await _send_error(send_with_status, REFUSED_ERROR)
                    return
                token = drain.enter()
            await self.app(scope, timed_receive(receive, self.body_timeout_s), send_with_status)
        except APIError as exc:  # e.g. the body deadline, raised in a route that does not map its own errors
            if response_started:
                raise
            await _send_error(send_with_status, exc)
        finally:
            if token is not None:
                drain.exit(token)
            metrics = self.state.metrics
            metrics.requests.labels(route, str(status)).inc()
            metrics.request_seconds.labels(route).observe(time.perf_counter() - started)

    def _authorized(self, scope: Scope) -> bool:
        header = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return False
        token = token.strip()
        return any(hmac.compare_digest(token, key) for key in self.keys)


async def _send_error(send: Send, error: APIError) -> None:
    body = error_body(error)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
