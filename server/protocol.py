"""Wire models: the OpenAI request bodies, validated by hand into frozen dataclasses.

The entry the routes import from. Every check raises :class:`~.errors.APIError` (400) whose ``param``
names the offending field with its path (``messages[2].content``, ``tools[0].function.parameters``), so a
client learns exactly what to fix. Unknown top-level fields are refused as OpenAI does ("Unrecognized
request argument"), except a few that are metadata only. Costs: linear in the body size; schemas are
walked once for their depth. The work lives in:

- :mod:`.protocol_fields`: :func:`parse_json_body` and the typed field readers every validator uses;
- :mod:`.chat_request`: :class:`ChatCompletionRequest` and :func:`validate_chat_request`, helped by
  :mod:`.chat_messages` (``messages``) and :mod:`.chat_schemas` (``tools``, ``tool_choice``,
  ``response_format``: :class:`JsonSchemaFormat`);
- :mod:`.embeddings_request`: :class:`EmbeddingRequest` and :func:`validate_embedding_request`.
"""

from __future__ import annotations

from .chat_request import ChatCompletionRequest, validate_chat_request
from .chat_schemas import MAX_SCHEMA_DEPTH, MAX_TOOLS, JsonSchemaFormat
from .embeddings_request import EmbeddingRequest, validate_embedding_request
from .protocol_fields import parse_json_body

__all__ = [
    "MAX_SCHEMA_DEPTH",
    "MAX_TOOLS",
    "ChatCompletionRequest",
    "EmbeddingRequest",
    "JsonSchemaFormat",
    "parse_json_body",
    "validate_chat_request",
    "validate_embedding_request",
]
