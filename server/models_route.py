"""``GET /v1/models`` and ``GET /v1/models/{model}``: the loaded models in OpenAI's shape."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from .errors import APIError
from .state import ServerState, state_of

__all__ = ["list_models", "retrieve_model"]

OWNED_BY = "realizar-ort"


def _entries(state: ServerState) -> list[dict[str, Any]]:
    return [{"id": s.name, "object": "model", "created": s.created, "owned_by": OWNED_BY}
            for s in (state.llm, state.embedding) if s is not None]


async def list_models(request: Request) -> Response:
    return Response(orjson.dumps({"object": "list", "data": _entries(state_of(request))}),
                    media_type="application/json")


async def retrieve_model(request: Request) -> Response:
    model = request.path_params["model"]
    for entry in _entries(state_of(request)):
        if entry["id"] == model:
            return Response(orjson.dumps(entry), media_type="application/json")
    model = model if len(model) <= 80 else model[:77] + "..."
    raise APIError(404, f"The model `{model}` does not exist.", "invalid_request_error", "model", "model_not_found")
