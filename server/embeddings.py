"""``POST /v1/embeddings``: strings or token ids in, float lists or base64 (little-endian float32) out.

The embedding engine blocks (and coalesces concurrent calls into shared batches itself), so each request
runs it in a worker thread under the service's capacity limiter; the event loop never waits on it.
"""

from __future__ import annotations

import base64
from typing import Any

import anyio
import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response

from .errors import invalid
from .protocol import EmbeddingRequest, parse_json_body, validate_embedding_request
from .state import EmbeddingService, read_body, state_of

__all__ = ["embeddings", "encode_embedding"]


async def embeddings(request: Request) -> Response:
    state = state_of(request)
    body = await read_body(request, state.config.server.max_body_bytes)
    req = validate_embedding_request(parse_json_body(body))
    service = state.require_embedding(req.model)
    if req.dimensions is not None and req.dimensions != service.dimensions:
        raise invalid(f"dimensions is not supported by model `{service.name}`: it only produces "
                      f"{service.dimensions}-dimensional embeddings.", "dimensions")
    vectors, prompt_tokens = await anyio.to_thread.run_sync(_embed, service, req, limiter=service.limiter)
    state.metrics.prompt_tokens.labels(service.name).inc(prompt_tokens)
    data = [
        {"object": "embedding", "index": i, "embedding": encode_embedding(vectors[i], req.encoding_format)}
        for i in range(vectors.shape[0])
    ]
    payload = {"object": "list", "data": data, "model": service.name,
               "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
    return Response(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def encode_embedding(vector: np.ndarray, encoding_format: str) -> Any:
    """A float32 vector as OpenAI sends it: a list of floats, or base64 of its little-endian bytes."""
    if encoding_format == "base64":
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return np.asarray(vector, dtype=np.float32)  # orjson serialises it as a list of floats


def _embed(service: EmbeddingService, req: EmbeddingRequest) -> tuple[np.ndarray, int]:
    """Run the engine (worker thread): ``(vectors [n, dim] float32, prompt token count)``.

    The engine's refusals (an input over the model's limit with ``overflow = "error"``, a token id
    outside the vocabulary) are 400s naming the input.
    """
    from realizar_ort.embeddings.engine import EmbeddingError

    engine = service.engine
    try:
        if req.texts is not None:
            result = engine.embed_with_usage(list(req.texts))
        else:
            assert req.token_ids is not None
            result = engine.embed_token_ids([list(ids) for ids in req.token_ids])
    except EmbeddingError as exc:
        index = getattr(exc, "index", None)
        many = (req.texts is not None and len(req.texts) > 1) or (req.token_ids is not None and len(req.token_ids) > 1)
        raise invalid(str(exc), f"input[{index}]" if many and index is not None else "input") from None
    return np.asarray(result.vectors, dtype=np.float32), int(sum(result.token_counts))
