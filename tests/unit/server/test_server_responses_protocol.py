"""The Responses wire model (no model): input items -> chat messages, tools and formats, the stateless
refusals, and the event sequence a run's chat chunks become."""

from __future__ import annotations

import pytest
from realizar_ort.server.chat_format import ChunkBuilder, ToolCallFragment
from realizar_ort.server.errors import APIError
from realizar_ort.server.responses_events import ResponseBuilder
from realizar_ort.server.responses_request import validate_responses_request

TOOL = {"type": "function", "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def test_items_become_chat_messages():
    req = validate_responses_request({"model": "m", "instructions": "Be brief.", "input": [
        {"role": "developer", "content": "Use tools."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather "},
                                                         {"type": "input_text", "text": "in Paris?"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": '{"city":"Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "Sunny"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
    ], "tools": [TOOL]})
    assert [m["role"] for m in req.chat.messages] == ["system", "system", "user", "assistant", "tool"]
    assert req.chat.messages[2]["content"] == "Weather in Paris?"
    assistant = req.chat.messages[3]
    assert assistant["content"] == "Checking." and [c["id"] for c in assistant["tool_calls"]] == ["c1", "c2"]
    assert req.chat.messages[4] == {"role": "tool", "tool_call_id": "c1", "content": "Sunny"}
    assert req.chat.tools[0]["function"]["name"] == "get_weather" and req.chat.include_usage


def test_formats_tool_choices_and_ignored_tools():
    req = validate_responses_request({"model": "m", "input": "hi", "tools": [{"type": "web_search"}, TOOL],
                                      "tool_choice": {"type": "allowed_tools", "mode": "required",
                                                      "tools": [{"type": "function", "name": "get_weather"}]},
                                      "text": {"format": {"type": "json_schema", "name": "p",
                                                          "schema": {"type": "object"}}},
                                      "max_output_tokens": 9, "store": True, "reasoning": {"effort": "low"},
                                      "include": ["reasoning.encrypted_content"], "truncation": "auto"})
    assert req.chat.tool_choice == "required" and len(req.chat.tools) == 1
    assert req.chat.response_format.type == "json_schema" and req.chat.max_tokens == 9
    assert len(req.warnings) == 1 and "web_search" in req.warnings[0]
    named = validate_responses_request({"model": "m", "input": "hi", "tools": [TOOL],
                                        "tool_choice": {"type": "function", "name": "get_weather"}})
    assert named.chat.tool_choice == {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize(("body", "param"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id"),
    ({"input": []}, "input"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{"}]}, "input[0].arguments"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"tools": [{"type": "web_search"}, {"type": "function", "name": "bad name"}]}, "tools[1].name"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"temperature": 3}, "temperature"),
])
def test_refusals_name_the_field(body, param):
    with pytest.raises(APIError) as info:
        validate_responses_request({"model": "m", "input": "hi", **body})
    assert info.value.status == 400 and info.value.param == param, info.value.message


def test_chunks_become_the_documented_event_sequence():
    req = validate_responses_request({"model": "m", "input": "hi", "tools": [TOOL]})
    chunks = ChunkBuilder(model="m")
    builder = ResponseBuilder(req, "m")
    events = builder.start()
    for step in (chunks.delta(content="Let me check."),
                 chunks.delta(tool_calls=[ToolCallFragment(0, "", id="call_a", name="get_weather")]),
                 chunks.delta(tool_calls=[ToolCallFragment(0, '{"city":"Paris"}')]),
                 chunks.delta(finish_reason="tool_calls")):
        for chunk in step:
            events += builder.chunk(chunk)
    events += builder.finish({"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12})
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    message, call = final["output"]
    assert message["content"][0]["text"] == "Let me check." and message["status"] == "completed"
    assert (call["call_id"], call["name"], call["arguments"]) == ("call_a", "get_weather", '{"city":"Paris"}')
    assert final["usage"]["input_tokens"] == 5 and final["usage"]["total_tokens"] == 12
    assert final["status"] == "completed" and events[0]["response"]["output"] == []
