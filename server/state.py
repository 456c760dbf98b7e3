"""What the app holds for its lifetime: the engines, their public names, metrics, and the request helpers
every route shares (body reading with the size limit, model lookup, disconnect watching)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from starlette.requests import Request

import realizar_ort
from realizar_ort.config import Config, LlmModelConfig

from .errors import APIError
from .json_mode import JsonModeService
from .metrics import ServerMetrics
from .shutdown import Drain

__all__ = ["EmbeddingService", "LlmService", "ServerState", "read_body", "run_unless_disconnected", "state_of",
           "system_fingerprint"]

log = logging.getLogger("realizar_ort.server")
T = TypeVar("T")


@dataclass
class LlmService:
    engine: Any  # realizar_ort.generation.engine.ModelEngine (or a test fake with the same methods)
    name: str
    max_context: int
    json_mode: JsonModeService | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    fingerprint: str = "fp_unknown"  # OpenAI's system_fingerprint: see system_fingerprint()


def system_fingerprint(manifest: Any, config: LlmModelConfig | None) -> str:
    """A stable ``fp_`` + 12 hex digits for the weights (the manifest's name, source checksum, dtype) and the
    settings that shape answers (the model config minus its path, the realizar-ort version): the same model
    served with the same config gets the same fingerprint on every replica and restart."""
    parts = [realizar_ort.__version__, getattr(manifest, "name", ""), repr(getattr(manifest, "source", None)),
             getattr(manifest, "dtype", ""), repr(getattr(manifest, "quantization", None))]
    if config is not None:
        parts.append(repr({k: v for k, v in dataclasses.asdict(config).items() if k != "path"}))
    return "fp_" + hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:12]


@dataclass
class EmbeddingService:
    engine: Any  # realizar_ort.embeddings.engine.EmbeddingEngine (or a test fake)
    name: str
    dimensions: int
    limiter: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(64))
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class ServerState:
    config: Config
    metrics: ServerMetrics
    llm: LlmService | None = None
    embedding: EmbeddingService | None = None
    ready: bool = False
    owned: list[Any] = field(default_factory=list)  # engines the app created and must close
    drain: Drain = field(init=False)

    def __post_init__(self) -> None:
        self.drain = Drain(self.config.server.drain_timeout_s)

    def require_llm(self, model: str) -> LlmService:
        if self.llm is None or model != self.llm.name:
            raise _model_not_found(model, self, "chat")
        return self.llm

    def require_embedding(self, model: str) -> EmbeddingService:
        if self.embedding is None or model != self.embedding.name:
            raise _model_not_found(model, self, "embedding")
        return self.embedding

    def model_names(self) -> list[str]:
        return [s.name for s in (self.llm, self.embedding) if s is not None]


def _model_not_found(model: str, state: ServerState, kind: str) -> APIError:
    model = model if len(model) <= 80 else model[:77] + "..."
    service = state.llm if kind == "chat" else state.embedding
    if service is None:
        message = f"The model `{model}` does not exist: this server has no {kind} model loaded."
    elif model in state.model_names():
        message = f"The model `{model}` is not a {kind} model; use `{service.name}` for this endpoint."
    else:
        message = f"The model `{model}` does not exist; this server serves {state.model_names()}."
    return APIError(404, message, "invalid_request_error", "model", "model_not_found")


def state_of(request: Request) -> ServerState:
    return request.app.state.realizar  # type: ignore[no-any-return]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    too_large = APIError(413, f"The request body exceeds the server's limit of {limit} bytes.",
                         "invalid_request_error", None, "request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def run_unless_disconnected(request: Request, work: Callable[[], Awaitable[T]],
                                  on_disconnect: Callable[[], None]) -> T | None:
    """Await ``work()``; if the client disconnects first, call ``on_disconnect`` and return None.

    Needs the body to have been read already (the next ``receive`` then only reports a disconnect).
    """
    result: list[T] = []
    failure: list[BaseException] = []
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    on_disconnect()
                    tg.cancel_scope.cancel()
                    return

        async def run() -> None:
            try:
                result.append(await work())
            except Exception as exc:  # re-raised below, unwrapped from the task group
                failure.append(exc)
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        tg.start_soon(run)
    if failure:
        raise failure[0]
    return result[0] if result else None
