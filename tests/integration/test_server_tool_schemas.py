"""Tool schemas as real clients send them, through the official ``openai`` client against the live SmolLM2
server: Pydantic-generated parameters with ``$defs``/``$ref`` under every ``tool_choice`` and with
parallel calls, tools without parameters, and OpenAI's streaming chunk layout (checked on the raw SSE)."""

from __future__ import annotations

import enum
import json

import httpx
import jsonschema
import pydantic
import pytest

pytestmark = pytest.mark.slow

LLM = "smollm2-135m-instruct"


class User(pydantic.BaseModel):
    name: str
    age: int


class Role(enum.StrEnum):
    admin = "admin"
    guest = "guest"


class Member(pydantic.BaseModel):
    user: User
    role: Role
    manager: User | None = None


class Team(pydantic.BaseModel):
    users: list[User] = pydantic.Field(max_length=2)
    members: list[Member] = pydantic.Field(default=[], max_length=1)


class Node(pydantic.BaseModel):
    label: str
    children: list[Node] = pydantic.Field(default=[], max_length=1)


class Shelf(pydantic.BaseModel):  # a different "User"-named definition would collide without scoping
    label: str


def _tool(name: str, model: type[pydantic.BaseModel], description: str) -> dict:
    return {"type": "function", "function": {"name": name, "description": description,
                                             "parameters": model.model_json_schema()}}


# The issue's reproducer, verbatim.
ISSUE_TOOL = {"type": "function", "function": {"name": "add_users", "parameters": {
    "$defs": {"User": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                       "required": ["name", "age"]}},
    "type": "object", "properties": {"users": {"type": "array", "items": {"$ref": "#/$defs/User"}}},
    "required": ["users"]}}}
TEAM = _tool("create_team", Team, "Create a team from its users and members")
TREE = _tool("make_tree", Node, "Build a tree of labels")
SHELF = {"type": "function", "function": {"name": "label_shelf", "parameters": {
    "$defs": {"User": Shelf.model_json_schema()}, "type": "object",
    "properties": {"shelf": {"$ref": "#/$defs/User"}}, "required": ["shelf"]}}}
TOOLS = [ISSUE_TOOL, TEAM, TREE, SHELF]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "Add the users Ann, 31, and Bo, 40."}]


def _check_calls(calls, allowed) -> None:
    for call in calls:
        assert call.function.name in allowed
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


@pytest.mark.parametrize("choice", ["auto", "required", "named"])
def test_the_issues_nested_schema_under_every_tool_choice(client, choice):
    tool_choice = {"type": "function", "function": {"name": "add_users"}} if choice == "named" else choice
    r = client.chat.completions.create(model=LLM, messages=ASK, tools=[ISSUE_TOOL, SHELF], tool_choice=tool_choice,
                                       temperature=0, max_tokens=40)  # both tools define $defs/User
    finish, calls = r.choices[0].finish_reason, r.choices[0].message.tool_calls or ()
    if choice != "auto":
        assert calls and finish in ("tool_calls", "length")
    if finish == "tool_calls":
        _check_calls(calls, ["add_users"] if choice == "named" else SCHEMAS)
    elif calls:  # SmolLM2 lists users until max_tokens: what it wrote is the schema's prefix
        assert calls[0].function.arguments.startswith('{"users":[{"name":"')


def test_pydantic_models_nested_lists_optional_enum_recursive_named_and_parallel(client):
    for name in ("create_team", "make_tree"):
        r = client.chat.completions.create(model=LLM, messages=ASK, tools=[TEAM, TREE], temperature=0, max_tokens=100,
                                           tool_choice={"type": "function", "function": {"name": name}})
        calls = r.choices[0].message.tool_calls
        if name == "make_tree" and r.choices[0].finish_reason == "length":  # SmolLM2 nests the tree forever
            assert calls[0].function.arguments.startswith('{"label":"') and len(calls) == 1
            continue
        assert r.choices[0].finish_reason == "tool_calls", r.choices[0].message
        _check_calls(calls, [name])
    r = client.chat.completions.create(model=LLM, messages=ASK, tools=[TEAM, SHELF], tool_choice="required",
                                       parallel_tool_calls=True, temperature=0, max_tokens=120)
    assert r.choices[0].finish_reason == "tool_calls"
    _check_calls(r.choices[0].message.tool_calls, SCHEMAS)


@pytest.mark.parametrize("parameters", [None, {}, {"type": "object", "properties": {}}])
def test_a_tool_without_parameters_takes_exactly_an_empty_object(client, parameters):
    fn = {"name": "ping", "description": "Check that the service is up"}
    if parameters is not None:
        fn["parameters"] = parameters
    r = client.chat.completions.create(model=LLM, messages=[{"role": "user", "content": "Is the service up?"}],
                                       tools=[{"type": "function", "function": fn}], tool_choice="required",
                                       temperature=0, max_tokens=20)
    (call,) = r.choices[0].message.tool_calls
    assert r.choices[0].finish_reason == "tool_calls"
    assert (call.function.name, call.function.arguments) == ("ping", "{}")


def _sse_chunks(live, body):
    with httpx.stream("POST", live.url + "/v1/chat/completions", json={**body, "stream": True}, timeout=120) as r:
        assert r.status_code == 200
        events = [line[len("data: "):] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_stream_chunk_layout_is_openais(live):
    question = [{"role": "user", "content": "What is the capital of France?"}]
    chunks = _sse_chunks(live, {"model": LLM, "messages": question, "temperature": 0, "max_tokens": 4,
                                "stream_options": {"include_usage": True}})
    choices = [c["choices"][0] for c in chunks[:-1]]
    assert choices[0]["delta"] == {"role": "assistant", "content": ""} and choices[0]["finish_reason"] is None
    assert all(set(c["delta"]) == {"content"} and c["delta"]["content"] for c in choices[1:-1])
    assert choices[-1]["delta"] == {} and choices[-1]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    chunks = _sse_chunks(live, {"model": LLM, "messages": [{"role": "user", "content": "Weather in Paris?"}],
                                "tools": tools, "tool_choice": "required", "temperature": 0, "max_tokens": 40})
    choices = [c["choices"][0] for c in chunks]
    assert choices[0]["delta"] == {"role": "assistant", "content": ""}
    calls = [c["delta"]["tool_calls"] for c in choices[1:-1]]
    assert all(len(c) == 1 for c in calls) and calls[0][0]["function"]["name"] == "get_weather"
    assert json.loads("".join(c[0]["function"]["arguments"] for c in calls))["city"]
    assert choices[-1]["delta"] == {} and choices[-1]["finish_reason"] == "tool_calls"


PERSON = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}  # "name" overlaps a call body's key
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PERSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}


@pytest.mark.parametrize("stream", [False, True])
def test_tools_with_a_response_format(client, stream):
    def ask(question, choice):
        kwargs = dict(model=LLM, messages=[{"role": "user", "content": question}], tools=[WEATHER],
                      tool_choice=choice, response_format=PERSON_FORMAT, temperature=0, max_tokens=40)
        if not stream:
            r = client.chat.completions.create(**kwargs)
            m = r.choices[0].message
            return r.choices[0].finish_reason, m.content, [(c.function.name, c.function.arguments)
                                                           for c in m.tool_calls or ()]
        content, calls, finish = "", {}, None
        for chunk in client.chat.completions.create(**kwargs, stream=True):
            for c in chunk.choices:
                content += c.delta.content or ""
                for t in c.delta.tool_calls or ():
                    call = calls.setdefault(t.index, ["", ""])
                    call[0] += t.function.name or ""
                    call[1] += t.function.arguments or ""
                finish = c.finish_reason or finish
        return finish, content or None, [tuple(c) for _, c in sorted(calls.items())]

    # auto: the model picks; either way the reply is a valid call or a valid answer, never free text
    finish, content, calls = ask("What is the weather in Paris?", "auto")
    assert (finish, content) == ("tool_calls", None) and calls[0][0] == "get_weather"
    assert json.loads(calls[0][1])["city"]
    finish, content, calls = ask("Describe a person called Ada who is 36.", "auto")
    assert finish == "stop" and not calls
    jsonschema.validate(json.loads(content), PERSON)
    # none: only the formatted answer, even for a weather question
    finish, content, calls = ask("What is the weather in Paris?", "none")
    assert finish == "stop" and not calls
    jsonschema.validate(json.loads(content), PERSON)
    # required: only calls, the format does not apply
    finish, content, calls = ask("Describe a person called Ada who is 36.", "required")
    assert finish == "tool_calls" and calls and calls[0][0] == "get_weather"
