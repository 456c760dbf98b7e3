"""The embeddings request: :class:`EmbeddingRequest` and :func:`validate_embedding_request`.

``input`` may be a string, an array of strings, an array of token ids or an array of token-id arrays;
exactly one of ``texts`` / ``token_ids`` is set on the result. Every error is an :class:`~.errors.APIError`
(400) whose ``param`` names the field. Costs: linear in the size of ``input``. Pure functions: safe from
any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from .errors import invalid
from .protocol_fields import check_unknown_fields, is_int, read_int, read_string, short_repr, type_name

__all__ = ["MAX_EMBEDDING_INPUTS", "EmbeddingRequest", "validate_embedding_request"]

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit
_EMBEDDING_FIELDS = {"model", "input", "encoding_format", "dimensions", "user"}


@dataclass(frozen=True)
class EmbeddingRequest:
    model: str
    texts: tuple[str, ...] | None  # exactly one of texts / token_ids is set
    token_ids: tuple[tuple[int, ...], ...] | None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


def validate_embedding_request(data: dict[str, Any]) -> EmbeddingRequest:
    """Check a decoded embeddings body field by field; the first bad field raises a 400 naming it."""
    check_unknown_fields(data, _EMBEDDING_FIELDS)
    model = read_string(data, "model", required=True)
    read_string(data, "user")
    fmt = data.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise invalid(f"encoding_format must be 'float' or 'base64', got {short_repr(fmt)}.", "encoding_format")
    dimensions = read_int(data, "dimensions", minimum=1)
    texts, token_ids = _embedding_input(data.get("input"))
    return EmbeddingRequest(model, texts, token_ids, fmt, dimensions)


def _embedding_input(value: Any) -> tuple[tuple[str, ...] | None, tuple[tuple[int, ...], ...] | None]:
    if value is None:
        raise invalid("Missing required parameter: 'input'.", "input")
    if isinstance(value, str):
        return (value,), None
    if not isinstance(value, list) or not value:
        raise invalid("input must be a string, an array of strings, an array of token ids or an array of "
                      "token-id arrays, and must not be empty.", "input")
    if len(value) > MAX_EMBEDDING_INPUTS:
        raise invalid(f"input has {len(value)} entries; at most {MAX_EMBEDDING_INPUTS} are allowed.", "input")
    first = value[0]
    if isinstance(first, str):
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise invalid(f"input[{i}] must be a string like the other inputs, got {type_name(item)}.",
                              f"input[{i}]")
        return tuple(value), None
    if is_int(first):
        return None, (_token_ids(value, "input"),)
    if isinstance(first, list):
        return None, tuple(_token_ids(item, f"input[{i}]") for i, item in enumerate(value))
    raise invalid(f"input[0] must be a string, a token id or an array of token ids, got {type_name(first)}.",
                  "input[0]")


def _token_ids(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise invalid(f"{where} must be a non-empty array of token ids.", where)
    for i, tok in enumerate(value):
        if not is_int(tok) or tok < 0:
            raise invalid(f"{where}[{i}] must be a non-negative integer token id, got {short_repr(tok)}.", where)
    return tuple(value)
