"""Every field of OpenAI's current chat and embeddings request schemas is honoured, a no-op or a 400 naming
it (the schema is the cut copy in bench/openai_openapi_served.json, from openai/openai-openapi)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from realizar_ort.server.chat_request import _CHAT_FIELDS, validate_chat_request
from realizar_ort.server.embeddings_request import _EMBEDDING_FIELDS
from realizar_ort.server.errors import APIError

SPEC = json.loads((Path(__file__).parents[3] / "bench" / "openai_openapi_served.json").read_text())
BASE = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def request_fields(name: str) -> set[str]:
    schemas = SPEC["components"]["schemas"]
    schema, fields = schemas[name], set()
    for part in schema.get("allOf", []):
        fields |= request_fields(part["$ref"].rsplit("/", 1)[1]) if "$ref" in part else set(part.get("properties", {}))
    return fields | set(schema.get("properties", {}))


def test_every_field_of_the_openai_schemas_is_known():
    chat = request_fields("CreateChatCompletionRequest")
    assert {"modalities", "prompt_cache_key", "verbosity", "messages"} <= chat  # the cut spec is the real one
    assert chat - _CHAT_FIELDS == set()
    assert request_fields("CreateEmbeddingRequest") - _EMBEDDING_FIELDS == set()


@pytest.mark.parametrize("field, value", [
    ("modalities", ["text"]), ("prompt_cache_key", "agent-7"), ("service_tier", "auto"), ("service_tier", "flex"),
    ("safety_identifier", "u-1"), ("store", True), ("metadata", {"team": "a"}), ("verbosity", "low"),
    ("user", "u"), ("prediction", {"type": "content", "content": "x"}), ("reasoning_effort", "none"),
    ("prompt_cache_retention", "24h"), ("prompt_cache_options", {"ttl": "30m"}), ("audio", None),
    ("web_search_options", None), ("functions", None), ("moderation", None),
])
def test_a_value_that_asks_for_nothing_we_lack_is_a_no_op(field, value):
    assert validate_chat_request({**BASE, field: value}) == validate_chat_request(BASE)


@pytest.mark.parametrize("field, value", [
    ("modalities", ["text", "audio"]), ("modalities", "text"), ("audio", {"voice": "alloy", "format": "mp3"}),
    ("web_search_options", {}), ("moderation", {"model": "omni-moderation-latest"}), ("reasoning_effort", "high"),
    ("functions", [{"name": "f"}]), ("function_call", "auto"), ("service_tier", 3), ("verbosity", "loud"),
    ("metadata", {"k": 1}), ("store", "yes"), ("prompt_cache_key", 5), ("prediction", {"type": "other"}),
])
def test_a_value_we_cannot_honour_is_a_400_naming_the_field(field, value):
    with pytest.raises(APIError) as info:
        validate_chat_request({**BASE, field: value})
    assert info.value.status == 400 and info.value.param.split(".")[0] == field
    assert field in info.value.message


def test_fields_outside_the_schema_are_still_refused():
    with pytest.raises(APIError) as info:
        validate_chat_request({**BASE, "frobnicate": 1})
    assert info.value.param == "frobnicate"
