"""Wire-model validation and the error mapping: every bad field is a 400 that names it (no model needed)."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest
from realizar_ort.server.chat_format import ChunkBuilder, ToolCallFragment, fold_chunks
from realizar_ort.server.embeddings import encode_embedding
from realizar_ort.server.errors import INTERNAL_ERROR_MESSAGE, APIError, to_api_error
from realizar_ort.server.protocol import (
    MAX_SCHEMA_DEPTH,
    parse_json_body,
    validate_chat_request,
    validate_embedding_request,
)
from realizar_ort.server.sse import SSE_DONE, sse_error, sse_event

from realizar_ort.errors import ContextLengthError, EngineClosedError, InvalidRequestError, QueueFullError

MSG = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def chat(**fields):
    return {"model": "m", "messages": MSG, **fields}


def bad_chat(body) -> APIError:
    with pytest.raises(APIError) as info:
        validate_chat_request(body)
    assert info.value.status == 400
    return info.value


# ---- body -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"{", b'{"model": "m",', b"[1, 2]", b'"text"', b"\xff\xfe{}", b"NaN",
                                 b'{"a": "\\ud800"}', b"[" * 5000])
def test_bodies_that_are_not_json_objects_are_400(raw):
    with pytest.raises(APIError) as info:
        parse_json_body(raw)
    assert info.value.status == 400 and info.value.type == "invalid_request_error"


# ---- chat: good requests --------------------------------------------------------------------------------


def test_minimal_chat_request_gets_defaults():
    req = validate_chat_request(chat())
    assert req.model == "m" and req.messages == ({"role": "user", "content": "hi"},)
    assert (req.temperature, req.top_p, req.max_tokens, req.stream, req.tools) == (1.0, 1.0, None, False, ())
    assert req.tool_choice == "auto" and not req.uses_tools
    assert validate_chat_request(chat(tools=[TOOL], tool_choice="none")).uses_tools  # rendered, never called


def test_full_chat_request_is_parsed():
    req = validate_chat_request(chat(
        messages=[
            {"role": "developer", "content": [{"type": "text", "text": "be "}, {"type": "text", "text": "brief"}]},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False, max_completion_tokens=7, max_tokens=99, temperature=0, top_p=0.5, seed=3,
        stop="END", presence_penalty=1, frequency_penalty=-1, logprobs=True, top_logprobs=2, n=1,
        stream=True, stream_options={"include_usage": True}, user="u", metadata={"a": "b"},
    ))
    assert req.messages[0] == {"role": "system", "content": "be brief"}
    assert req.messages[2]["tool_calls"][0]["function"]["arguments"] == '{"city":"Paris"}'
    assert req.messages[3] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
    assert req.max_tokens == 7  # max_completion_tokens wins
    assert req.stop == ("END",) and req.include_usage and req.uses_tools and req.parallel_tool_calls is False
    assert req.tool_choice == {"type": "function", "function": {"name": "get_weather"}}


def test_response_formats():
    assert validate_chat_request(chat(response_format={"type": "text"})).response_format is None
    assert validate_chat_request(chat(response_format={"type": "json_object"})).response_format.type == "json_object"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = validate_chat_request(chat(response_format={
        "type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": True}})).response_format
    assert (fmt.type, fmt.schema, fmt.name, fmt.strict) == ("json_schema", schema, "thing", True)
    both = validate_chat_request(chat(tools=[TOOL], response_format={"type": "json_object"}))  # as OpenAI allows
    assert both.tools and both.response_format.type == "json_object"


# ---- chat: bad requests name their param ----------------------------------------------------------------


@pytest.mark.parametrize("body, param", [
    ({"messages": MSG}, "model"),
    (chat(model=3), "model"),
    ({"model": "m"}, "messages"),
    (chat(messages="hi"), "messages"),
    (chat(messages=[]), "messages"),
    (chat(messages=[1]), "messages[0]"),
    (chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
    (chat(messages=[{"role": "user"}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]), "messages[0].content[0].type"),
    (chat(messages=[{"role": "user", "content": "x", "tool_calls": []}]), "messages[0].tool_calls"),
    (chat(messages=[{"role": "assistant", "content": None}]), "messages[0].content"),
    (chat(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                          "function": {"name": "f", "arguments": {"a": 1}}}]}]),
     "messages[0].tool_calls[0].function.arguments"),
    (chat(messages=[{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                          "function": {"name": "f", "arguments": "{"}}]}]),
     "messages[0].tool_calls[0].function.arguments"),
    (chat(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
    (chat(temperature="hot"), "temperature"),
    (chat(temperature=True), "temperature"),
    (chat(temperature=3), "temperature"),
    (chat(top_p=1.5), "top_p"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens=-5), "max_tokens"),
    (chat(max_tokens=1.5), "max_tokens"),
    (chat(max_tokens="10"), "max_tokens"),
    (chat(max_completion_tokens=-1), "max_completion_tokens"),
    (chat(n=2), "n"),
    (chat(n=0), "n"),
    (chat(seed="x"), "seed"),
    (chat(seed=2**70), "seed"),
    (chat(stop=5), "stop"),
    (chat(stop=[""]), "stop"),
    (chat(stop=["a"] * 17), "stop"),
    (chat(stop="x" * 5000), "stop"),
    (chat(presence_penalty=9), "presence_penalty"),
    (chat(repetition_penalty=0), "repetition_penalty"),
    (chat(logprobs="yes"), "logprobs"),
    (chat(top_logprobs=3), "top_logprobs"),
    (chat(logprobs=True, top_logprobs=21), "top_logprobs"),
    (chat(stream="yes"), "stream"),
    (chat(stream_options={"include_usage": True}), "stream_options"),
    (chat(stream=True, stream_options={"include_usage": 1}), "stream_options.include_usage"),
    (chat(stream=True, stream_options={"bogus": 1}), "stream_options.bogus"),
    (chat(logit_bias={"1": 5}), "logit_bias"),
    (chat(user=5), "user"),
    (chat(frobnicate=True), "frobnicate"),
    (chat(functions=[]), "functions"),
    (chat(tools={}), "tools"),
    (chat(tools=[TOOL] * 129), "tools"),
    (chat(tools=[{"type": "retrieval"}]), "tools[0].type"),
    (chat(tools=[{"type": "function"}]), "tools[0].function"),
    (chat(tools=[{"type": "function", "function": {"name": "bad name!"}}]), "tools[0].function.name"),
    (chat(tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]), "tools[0].function.parameters"),
    (chat(tools=[{"type": "function", "function": {"name": "f", "extra": 1}}]), "tools[0].function.extra"),
    (chat(tools=[TOOL, TOOL]), "tools[1].function.name"),
    (chat(tool_choice="required"), "tool_choice"),
    (chat(tools=[TOOL], tool_choice="always"), "tool_choice"),
    (chat(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "other"}}), "tool_choice"),
    (chat(tools=[TOOL], tool_choice=7), "tool_choice"),
    (chat(parallel_tool_calls="no"), "parallel_tool_calls"),
    (chat(response_format="json"), "response_format"),
    (chat(response_format={"type": "yaml"}), "response_format.type"),
    (chat(response_format={"type": "json_schema"}), "response_format.json_schema"),
    (chat(response_format={"type": "json_schema", "json_schema": {"schema": {}}}), "response_format.json_schema.name"),
    (chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": "s"}}),
     "response_format.json_schema.schema"),
    (chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "strict": "yes"}}),
     "response_format.json_schema.strict"),
])
def test_bad_chat_field_is_400_naming_it(body, param):
    error = bad_chat(body)
    assert error.param == param, error.message
    assert error.message


def test_deeply_nested_schema_is_refused_without_recursion():
    schema: dict = {"type": "object"}
    for _ in range(MAX_SCHEMA_DEPTH * 50):
        schema = {"type": "object", "properties": {"a": schema}}
    error = bad_chat(chat(response_format={"type": "json_schema", "json_schema": {"name": "deep", "schema": schema}}))
    assert error.param == "response_format.json_schema.schema" and "deep" in error.message


def test_huge_values_are_not_echoed_back():
    error = bad_chat(chat(messages=[{"role": "x" * 1_000_000, "content": "y"}]))
    assert len(error.message) < 300


# ---- embeddings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, texts, ids", [
    ("hello", ("hello",), None),
    (["a", "b"], ("a", "b"), None),
    ([1, 2, 3], None, ((1, 2, 3),)),
    ([[1, 2], [3]], None, ((1, 2), (3,))),
])
def test_embedding_inputs(value, texts, ids):
    req = validate_embedding_request({"model": "e", "input": value, "encoding_format": "base64"})
    assert (req.texts, req.token_ids, req.encoding_format) == (texts, ids, "base64")


@pytest.mark.parametrize("body, param", [
    ({"input": "x"}, "model"),
    ({"model": "e"}, "input"),
    ({"model": "e", "input": []}, "input"),
    ({"model": "e", "input": 5}, "input"),
    ({"model": "e", "input": ["a", 1]}, "input[1]"),
    ({"model": "e", "input": [1, "a"]}, "input"),
    ({"model": "e", "input": [1, -2]}, "input"),
    ({"model": "e", "input": [[1], []]}, "input[1]"),
    ({"model": "e", "input": [[1], "a"]}, "input[1]"),
    ({"model": "e", "input": [{"a": 1}]}, "input[0]"),
    ({"model": "e", "input": ["a"] * 2049}, "input"),
    ({"model": "e", "input": "a", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "e", "input": "a", "dimensions": 0}, "dimensions"),
    ({"model": "e", "input": "a", "dimensions": "big"}, "dimensions"),
    ({"model": "e", "input": "a", "extra": 1}, "extra"),
])
def test_bad_embedding_field_is_400_naming_it(body, param):
    with pytest.raises(APIError) as info:
        validate_embedding_request(body)
    assert (info.value.status, info.value.param) == (400, param), info.value.message


def test_base64_embedding_is_little_endian_float32():
    vector = np.array([0.1, -2.5, 3e-8], dtype=np.float32)
    decoded = np.frombuffer(base64.b64decode(encode_embedding(vector, "base64")), dtype="<f4")
    assert np.array_equal(decoded, vector)
    as_list = orjson.loads(orjson.dumps(encode_embedding(vector, "float"), option=orjson.OPT_SERIALIZE_NUMPY))
    assert np.array_equal(np.asarray(as_list, dtype=np.float32), vector)


# ---- error mapping --------------------------------------------------------------------------------------


def test_error_mapping():
    e = to_api_error(ContextLengthError("too long: 5000 > 2048"))
    assert (e.status, e.code, e.param, e.message) == (400, "context_length_exceeded", "messages", "too long: 5000 > 2048")
    e = to_api_error(InvalidRequestError("token id 99999 is out of range", "input"))
    assert (e.status, e.param, e.type) == (400, "input", "invalid_request_error")
    e = to_api_error(QueueFullError("queue full"))
    assert e.status == 429 and e.headers["Retry-After"].isdigit()
    e = to_api_error(EngineClosedError("closed"))
    assert e.status == 503 and "Retry-After" in e.headers


def test_unexpected_errors_are_500_without_details(caplog):
    e = to_api_error(KeyError("secret internal detail"))
    assert (e.status, e.message, e.type) == (500, INTERNAL_ERROR_MESSAGE, "internal_error")
    assert "secret" not in orjson.dumps(e.body()).decode()
    assert any("unexpected error" in r.message for r in caplog.records)


def test_error_body_shape():
    body = APIError(400, "bad", param="x", code="c").body()
    assert body == {"error": {"message": "bad", "type": "invalid_request_error", "param": "x", "code": "c"}}


# ---- SSE framing and chunks -----------------------------------------------------------------------------


def test_sse_framing():
    assert sse_event({"a": 1}) == b'data: {"a":1}\n\n'
    assert SSE_DONE == b"data: [DONE]\n\n"
    frame = sse_error(APIError(400, "bad"))
    assert frame.startswith(b"event: error\ndata: ") and frame.endswith(b"\n\n")
    assert orjson.loads(frame.split(b"data: ", 1)[1])["error"]["message"] == "bad"


def test_chunks_fold_into_a_completion_with_tool_calls():
    b = ChunkBuilder(model="m", include_usage=True)
    assert b.delta(content="") == []  # the call's opening token: nothing to send yet, role waits
    steps = [
        b.delta(tool_calls=[ToolCallFragment(0, "", id="call_a", name="get_weather")]),
        b.delta(tool_calls=[ToolCallFragment(0, '{"city": ')]),
        b.delta(tool_calls=[ToolCallFragment(0, '"Paris"}')]),
        b.delta(tool_calls=[ToolCallFragment(1, '{}', id="call_b", name="now")]),
        b.delta(finish_reason="tool_calls"),
    ]
    assert [len(s) for s in steps] == [2, 1, 1, 1, 1]
    chunks = [c for s in steps for c in s]
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0] == {"role": "assistant", "content": ""}  # OpenAI's role chunk, then the call chunks
    assert deltas[1]["tool_calls"][0] == {"index": 0, "id": "call_a", "type": "function",
                                          "function": {"name": "get_weather", "arguments": ""}}
    assert "content" not in deltas[1] and "role" not in deltas[1]
    assert deltas[2]["tool_calls"][0] == {"index": 0, "function": {"arguments": '{"city": '}}  # no id/name again
    assert deltas[-1] == {} and chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert all(c["usage"] is None for c in chunks)
    done = fold_chunks(chunks, {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12})
    message = done["choices"][0]["message"]
    assert message["content"] is None and done["choices"][0]["finish_reason"] == "tool_calls"
    assert [c["function"] for c in message["tool_calls"]] == [
        {"name": "get_weather", "arguments": '{"city": "Paris"}'}, {"name": "now", "arguments": "{}"}]
    assert done["object"] == "chat.completion" and done["id"] == chunks[0]["id"]


def test_text_chunks_fold_and_empty_steps_are_skipped():
    b = ChunkBuilder(model="m")
    steps = [b.delta(content="Hel"), b.delta(content=""), b.delta(content="lo", finish_reason="stop")]
    assert steps[1] == []
    chunks = [c for s in steps for c in s]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert "usage" not in chunks[0]
    done = fold_chunks(chunks, {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})
    assert done["choices"][0]["message"] == {"role": "assistant", "content": "Hello", "refusal": None}
