"""``POST /v1/responses`` against the live SmolLM2 server: the official ``openai`` client's
``responses.create`` / ``responses.stream`` unmodified, function tools, ``text.format``, unknown tool types,
the stateless refusals, and an openai-agents ``Agent`` on its default (Responses) model class."""

from __future__ import annotations

import asyncio
import json

import httpx
import jsonschema
import openai
import pytest

pytestmark = pytest.mark.slow

LLM = "smollm2-135m-instruct"
WEATHER = {"type": "function", "name": "get_weather", "description": "Get the current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


def test_create_equals_the_chat_route(client):
    question = "What is the capital of France?"
    r = client.responses.create(model=LLM, input=question, max_output_tokens=12, temperature=0)
    chat = client.chat.completions.create(model=LLM, messages=[{"role": "user", "content": question}],
                                          max_tokens=12, temperature=0)
    assert r.object == "response" and r.id.startswith("resp_") and r.status == "completed"
    assert r.output_text == chat.choices[0].message.content and "Paris" in r.output_text
    (message,) = r.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (chat.usage.prompt_tokens, chat.usage.completion_tokens)
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    cut = client.responses.create(model=LLM, input=question, max_output_tokens=3, temperature=0)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.usage.output_tokens == 3


def test_instructions_and_message_items(client):
    items = [{"role": "developer", "content": "Answer in one word."},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Capital of France?"}]}]
    r = client.responses.create(model=LLM, input=items, instructions="You are terse.", max_output_tokens=8,
                                temperature=0)
    chat = client.chat.completions.create(model=LLM, max_tokens=8, temperature=0, messages=[
        {"role": "system", "content": "You are terse."}, {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Capital of France?"}])
    assert r.output_text == chat.choices[0].message.content
    assert r.instructions == "You are terse."


def test_stream_event_sequence_folds_to_the_response(client):
    kwargs = dict(model=LLM, input="What is the capital of France?", max_output_tokens=40, temperature=0)
    full = client.responses.create(**kwargs)
    with client.responses.stream(**kwargs) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.completed"]
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.output_text == full.output_text
    assert final.usage.output_tokens == full.usage.output_tokens


def test_function_tools_and_unknown_tool_types(client):
    tools = [WEATHER, {"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]}]
    r = client.responses.create(model=LLM, input="What is the weather in Paris?", tools=tools,
                                tool_choice="required", max_output_tokens=40, temperature=0)
    (call,) = r.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id.startswith("call_")
    assert "paris" in json.loads(call.arguments)["city"].lower()
    warnings = r.model_extra["warnings"]
    assert len(warnings) == 2 and "web_search" in warnings[0] and "file_search" in warnings[1]
    assert [t.name for t in r.tools] == ["get_weather"]

    with client.responses.stream(model=LLM, input="What is the weather in Paris?", tools=tools,
                                 tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=40,
                                 temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert types[2] == "response.output_item.added" and events[2].item.type == "function_call"
    assert types[-3:] == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    streamed = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert streamed == events[-3].arguments == final.output[0].arguments == call.arguments


def test_a_tool_result_turn(client):
    items = [{"role": "user", "content": "What is the weather in Paris?"},
             {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
             {"type": "function_call_output", "call_id": "call_1", "output": "Sunny, 21 C."}]
    r = client.responses.create(model=LLM, input=items, tools=[WEATHER], tool_choice="none", max_output_tokens=20,
                                temperature=0)
    assert r.output[0].type == "message" and r.output_text


def test_text_format_json_schema_and_json_object(client):
    r = client.responses.create(
        model=LLM, input="Describe a person called Ada who is 36, as JSON.", max_output_tokens=60, temperature=0,
        text={"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}})
    assert r.status == "completed"
    jsonschema.validate(json.loads(r.output_text), PERSON)
    assert r.text.format.type == "json_schema"
    r = client.responses.create(model=LLM, input="Give me a JSON object.", max_output_tokens=60, temperature=0,
                                text={"format": {"type": "json_object"}})
    assert r.output_text.startswith("{")


@pytest.mark.parametrize(("body", "param"), [
    ({"previous_response_id": "resp_123"}, "previous_response_id"),
    ({"conversation": "conv_1"}, "conversation"),
    ({"background": True}, "background"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, "input[0].content[0].type"),
    ({"tool_choice": {"type": "web_search"}}, "tool_choice"),
    ({"tools": [{"type": "function", "name": "f", "parameters": []}]}, "tools[0].parameters"),
    ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"frobnicate": 1}, "frobnicate"),
    ({"input": None}, "input"),
])
def test_bad_requests_are_400s_naming_the_field(live, body, param):
    r = httpx.post(live.url + "/v1/responses", json={"model": LLM, "input": "hi", **body})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


def test_openai_agents_agent_with_a_function_tool(live):
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    seen: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        seen.append(city)
        return f"It is sunny in {city}."

    def agent(client: openai.AsyncOpenAI) -> agents.Agent:
        model = agents.OpenAIResponsesModel(model=LLM, openai_client=client)  # the SDK's default model class
        return agents.Agent(name="weather", instructions="You answer weather questions.", tools=[get_weather],
                            model=model, model_settings=agents.ModelSettings(temperature=0, max_tokens=64),
                            tool_use_behavior="stop_on_first_tool")

    async def run(streamed: bool):
        async with openai.AsyncOpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0) as client:
            if not streamed:
                return await agents.Runner.run(agent(client), "What is the weather in Paris?", max_turns=3)
            result = agents.Runner.run_streamed(agent(client), "What is the weather in Paris?", max_turns=3)
            async for _ in result.stream_events():
                pass
            return result

    for streamed in (False, True):
        result = asyncio.run(run(streamed))
        assert result.final_output == "It is sunny in Paris."
    assert seen == ["Paris", "Paris"]


def test_openai_agents_agent_with_tools_and_an_output_type(live):
    """openai-agents sends tools and text.format together for ``Agent(tools=..., output_type=...)``."""
    agents = pytest.importorskip("agents")
    pydantic = pytest.importorskip("pydantic")
    agents.set_tracing_disabled(True)

    class Person(pydantic.BaseModel):
        name: str
        age: int

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return f"It is sunny in {city}."

    async def run():
        async with openai.AsyncOpenAI(base_url=live.url + "/v1", api_key="unused", max_retries=0) as client:
            agent = agents.Agent(name="people", instructions="You describe people.", tools=[get_weather],
                                 output_type=Person,
                                 model=agents.OpenAIResponsesModel(model=LLM, openai_client=client),
                                 model_settings=agents.ModelSettings(temperature=0, max_tokens=64))
            return await agents.Runner.run(agent, "Describe a person called Ada who is 36.", max_turns=2)

    result = asyncio.run(run())
    assert isinstance(result.final_output, Person) and result.final_output.name
