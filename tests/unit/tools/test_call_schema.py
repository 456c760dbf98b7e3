"""Call schemas keep each tool's ``$ref`` pointers resolving against its own ``parameters``; a tool without
parameters takes exactly ``{}``. Checked on real Pydantic-generated schemas, through the grammar itself."""

from __future__ import annotations

import enum
import json

import jsonschema
import pydantic
import pytest
from realizar_ort.kernels.token_mask import advance_token_bytes_reference

from realizar_ort.grammar.json_schema import compile_schema_automaton
from realizar_ort.tools.call_schema import NO_ARGUMENTS, scoped_arguments, scoped_schema, takes_no_arguments
from realizar_ort.tools.definitions import parse_tools
from realizar_ort.tools.prompts import ChatMLToolStrategy, Llama3ToolStrategy


class User(pydantic.BaseModel):
    name: str
    age: int


class Color(enum.StrEnum):
    red = "red"
    blue = "blue"


class Team(pydantic.BaseModel):
    users: list[User]
    lead: User | None = None
    color: Color


class Node(pydantic.BaseModel):
    label: str
    children: list[Node] = []


class OtherUser(pydantic.BaseModel):  # its $defs also say "User", with another shape
    id: int


class Holder(pydantic.BaseModel):
    user: OtherUser

    model_config = pydantic.ConfigDict(title="Holder")


def _tool(name: str, model: type[pydantic.BaseModel] | None) -> dict:
    fn: dict = {"name": name}
    if model is not None:
        schema = model.model_json_schema()
        if model is Holder:  # rename OtherUser to User inside, to force a name clash with Team's User
            text = json.dumps(schema).replace("OtherUser", "User")
            schema = json.loads(text)
        fn["parameters"] = schema
    return {"type": "function", "function": fn}


TOOLS = parse_tools([_tool("make_team", Team), _tool("make_tree", Node), _tool("hold", Holder), _tool("ping", None)])
STRATEGIES = [ChatMLToolStrategy(), Llama3ToolStrategy()]


def _accepts(automaton, text: str) -> bool:
    arrays = (*automaton.arrays, automaton.plain_loop, automaton.loop_bits, automaton.free_string)
    r = advance_token_bytes_reference(arrays, text.encode("utf-8"), automaton.start, 0, [], 64)
    return r is not None and not r[2] and bool(automaton.final[r[0]])


GOOD = [
    ("make_team", {"users": [{"name": "Ann", "age": 3}], "lead": None, "color": "red"}),
    ("make_team", {"users": [], "lead": {"name": "Bo", "age": 40}, "color": "blue"}),
    ("make_tree", {"label": "a", "children": [{"label": "b", "children": [{"label": "c", "children": []}]}]}),
    ("hold", {"user": {"id": 7}}),
    ("ping", {}),
]
BAD = [
    ("make_team", {"users": [{"name": "Ann"}], "color": "red"}),  # nested model misses a field
    ("make_team", {"users": [], "color": "green"}),  # enum
    ("make_tree", {"label": "a", "children": [{"children": []}]}),  # recursive model misses label
    ("hold", {"user": {"name": "Ann", "age": 3}}),  # Team's User, not Holder's: $defs must not collide
    ("ping", {"type": "object"}),  # no parameters means exactly {}
]


@pytest.mark.parametrize("strategy", STRATEGIES, ids=lambda s: s.chat_format)
def test_pydantic_schemas_resolve_per_tool_under_every_choice(strategy) -> None:
    fmt = strategy.call_format
    choices = [TOOLS, *([t] for t in TOOLS)]  # auto/required (all tools) and each named tool
    for tools in choices:
        schema = fmt.call_schema(tools)
        automaton = compile_schema_automaton(schema, whitespace=0)
        names = {t.name for t in tools}
        for name, arguments in GOOD:
            body = json.dumps(fmt.body(name, arguments), separators=(",", ":"))
            assert _accepts(automaton, body) == (name in names), body
            if name in names:
                jsonschema.validate(json.loads(body), schema)
        for name, arguments in BAD:
            body = json.dumps(fmt.body(name, arguments), separators=(",", ":"))
            assert not _accepts(automaton, body), body


def test_parallel_calls_keep_the_tools_apart() -> None:
    fmt = ChatMLToolStrategy().call_format
    automaton = compile_schema_automaton(fmt.call_schema(TOOLS, max_parallel=3), whitespace=0)
    calls = [fmt.body(n, a) for n, a in GOOD[2:5]]
    assert _accepts(automaton, json.dumps(calls, separators=(",", ":")))
    wrong = [fmt.body(*GOOD[0]), fmt.body(*BAD[3])]
    assert not _accepts(automaton, json.dumps(wrong, separators=(",", ":")))


@pytest.mark.parametrize("parameters", [
    {}, {"type": "object"}, {"type": "object", "properties": {}}, {"type": "object", "properties": {}, "required": []},
    {"title": "Empty", "type": "object", "properties": {}},
])
def test_no_parameters_means_exactly_an_empty_object(parameters) -> None:
    assert takes_no_arguments(parameters)
    assert scoped_arguments("ping", parameters) == (dict(NO_ARGUMENTS), {})


@pytest.mark.parametrize("parameters", [
    {"type": "object", "additionalProperties": {"type": "string"}},
    {"type": "object", "properties": {"a": {"type": "string"}}},
    {"type": "object", "anyOf": [{"required": ["a"]}]},
    {"$ref": "#/$defs/X", "$defs": {"X": {"type": "object"}}},
])
def test_parameters_that_say_something_are_kept(parameters) -> None:
    assert not takes_no_arguments(parameters)


def test_only_schema_positions_are_rewritten() -> None:
    schema = {
        "$id": "urn:tool", "type": "object",
        "properties": {
            "default": {"$ref": "#/$defs/A"},  # a property named like a data keyword is still a schema
            "x": {"const": {"$ref": "#/not-a-reference"}, "default": {"$ref": "#/data"}},
            "self": {"$ref": "#"},
        },
        "$defs": {"A": {"type": "integer"}},
    }
    ref, defs = scoped_schema("tool:t", schema)
    assert ref == {"$ref": "#/$defs/tool:t"}
    moved = defs["tool:t"]
    assert "$id" not in moved
    assert moved["properties"]["default"] == {"$ref": "#/$defs/tool:t/$defs/A"}
    assert moved["properties"]["x"] == schema["properties"]["x"]
    assert moved["properties"]["self"] == {"$ref": "#/$defs/tool:t"}
    assert schema["properties"]["default"] == {"$ref": "#/$defs/A"}  # the input is not modified


def test_schemas_without_references_are_inlined_unchanged() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    assert scoped_schema("tool:t", schema) == (schema, {})
