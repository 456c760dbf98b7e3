"""Tool types and the OpenAI shapes: validation that names the bad field, ids, tool_choice, messages."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from realizar_ort.errors import InvalidRequestError
from realizar_ort.tools.definitions import (
    ToolCall,
    ToolChoice,
    ToolDefinition,
    new_call_id,
    normalize_messages,
    parse_tool_choice,
    parse_tools,
)
from realizar_ort.tools.prompts import ChatMLToolStrategy, Llama3ToolStrategy

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK = {"type": "function", "function": {"name": "get_time"}}


def test_tool_definition_round_trips_openai_shape() -> None:
    tools = parse_tools([WEATHER, CLOCK])
    assert tools[0] == ToolDefinition("get_weather", "Weather for a city", WEATHER["function"]["parameters"])
    assert tools[0].to_openai() == WEATHER
    assert tools[1].parameters == {"type": "object", "properties": {}, "additionalProperties": False}  # no arguments
    assert tools[1].to_openai() == {"type": "function", "function": {"name": "get_time", "parameters": tools[1].parameters}}


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ("get_weather", "tools"),
        ([WEATHER, 3], "tools[1]"),
        ([{"type": "retrieval", "function": WEATHER["function"]}], "tools[0].type"),
        ([{"type": "function"}], "tools[0].function"),
        ([{"type": "function", "function": {"name": "get weather"}}], "tools[0].function.name"),
        ([{"type": "function", "function": {"name": "x" * 65}}], "tools[0].function.name"),
        ([{"type": "function", "function": {"name": "f", "description": 5}}], "tools[0].function.description"),
        ([{"type": "function", "function": {"name": "f", "parameters": "{}"}}], "tools[0].function.parameters"),
        ([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}], "tools[0].function.parameters"),
        ([{"type": "function", "function": {"name": "f", "strict": "yes"}}], "tools[0].function.strict"),
        ([WEATHER, CLOCK, WEATHER], "tools[2].function.name"),
    ],
)
def test_bad_tools_are_refused_naming_the_field(tools: object, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_tools(tools)
    assert info.value.param == param
    assert param.split(".")[-1].split("[")[0] in str(info.value)


def test_call_ids_are_openai_style_and_unique() -> None:
    ids = {new_call_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"call_[A-Za-z0-9]{24}", i) for i in ids)


def test_tool_call_arguments_are_a_json_string_on_the_wire() -> None:
    call = ToolCall.from_openai(
        {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    )
    assert call.arguments == {"city": "Paris"}
    assert call.arguments_json == '{"city": "Paris"}'  # the exact text, kept
    wire = call.to_openai()
    assert wire == {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    assert call.to_openai(index=2)["index"] == 2
    made = ToolCall.create("get_weather", {"city": "Zürich"})
    assert json.loads(made.arguments_json) == {"city": "Zürich"} and "Zürich" in made.arguments_json
    assert made.id.startswith("call_")
    assert ToolCall.from_text("f", '{"a": 1').arguments is None  # cut-off text: kept, not parsed


@pytest.mark.parametrize(
    ("call", "param"),
    [
        ({"type": "function", "function": {"name": "f", "arguments": "{not json"}}, "tool_calls[0].function.arguments"),
        ({"type": "function", "function": {"name": "f", "arguments": "[1, 2]"}}, "tool_calls[0].function.arguments"),
        ({"type": "function", "function": {"name": "f", "arguments": 5}}, "tool_calls[0].function.arguments"),
        ({"type": "function", "function": {"arguments": "{}"}}, "tool_calls[0].function.name"),
        ({"type": "code", "function": {"name": "f"}}, "tool_calls[0].type"),
        ({"id": 7, "type": "function", "function": {"name": "f"}}, "tool_calls[0].id"),
    ],
)
def test_bad_tool_calls_are_refused_naming_the_field(call: dict, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        ToolCall.from_openai(call)
    assert info.value.param == param


def test_tool_choice_forms() -> None:
    tools = parse_tools([WEATHER, CLOCK])
    assert parse_tool_choice(None, tools) == ToolChoice("auto")
    assert parse_tool_choice(None, ()) == ToolChoice("none")
    assert parse_tool_choice("required", tools).forces_call
    assert parse_tool_choice({"type": "function", "function": {"name": "get_time"}}, tools) == ToolChoice("named", "get_time")
    assert not parse_tool_choice("auto", tools).forces_call


@pytest.mark.parametrize(
    ("choice", "tools", "param"),
    [
        ("sometimes", [WEATHER], "tool_choice"),
        (3, [WEATHER], "tool_choice"),
        ({"type": "function", "function": {"name": "nope"}}, [WEATHER], "tool_choice.function.name"),
        ({"type": "function"}, [WEATHER], "tool_choice"),
        ("required", [], "tool_choice"),
        ({"type": "function", "function": {"name": "get_weather"}}, [], "tool_choice"),
    ],
)
def test_bad_tool_choice_is_refused(choice: object, tools: list, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_tool_choice(choice, parse_tools(tools))
    assert info.value.param == param


def test_normalize_messages_parses_past_arguments_and_joins_text_parts() -> None:
    messages = normalize_messages(
        [
            {"role": "developer", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"x": [1, 2]}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "done"},
        ]
    )
    assert messages[0] == {"role": "system", "content": "sys"}
    assert messages[1]["content"] == "ab"
    assert messages[2]["content"] == ""
    assert messages[2]["tool_calls"][0]["function"]["arguments"] == {"x": [1, 2]}
    assert messages[3] == {"role": "tool", "content": "done", "tool_call_id": "call_1"}


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ([{"role": "wizard", "content": "x"}], "messages[0].role"),
        ([{"role": "user"}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "messages[0].content[0]"),
        ([{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{"}}]}],
         "messages[0].tool_calls[0].function.arguments"),
    ],
)
def test_bad_messages_are_refused_naming_the_field(messages: list, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        normalize_messages(messages)
    assert info.value.param == param


@pytest.mark.parametrize("strategy", [Llama3ToolStrategy(), ChatMLToolStrategy()])
def test_call_schema_is_the_union_of_the_tools(strategy: object) -> None:
    fmt = strategy.call_format  # type: ignore[attr-defined]
    tools = parse_tools([WEATHER, CLOCK])
    schema = fmt.call_schema(tools)
    good = [fmt.body("get_weather", {"city": "Paris"}), fmt.body("get_time", {})]
    bad = [
        fmt.body("get_weather", {}),  # required argument missing
        fmt.body("get_time", []),  # arguments must be an object
        fmt.body("get_weather", {"city": 3}),
        fmt.body("launch", {}),
        {**fmt.body("get_time", {}), "extra": 1},
    ]
    for body in good:
        jsonschema.validate(body, schema)
    for body in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, schema)
    assert fmt.call_schema(tools[:1]) == schema["anyOf"][0]
    if fmt.supports_parallel_calls:
        several = fmt.call_schema(tools, max_parallel=2)
        jsonschema.validate(good, several)
        jsonschema.validate(good[0], several)
        for wrong in ([], good * 2, [bad[0]]):
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(wrong, several)
    else:
        with pytest.raises(ValueError):
            fmt.call_schema(tools, max_parallel=2)


def test_chatml_strategy_puts_tools_and_an_example_in_the_first_user_message() -> None:
    strategy = ChatMLToolStrategy(default_system="You are SmolLM.")
    tools = parse_tools([WEATHER])
    turns = normalize_messages(
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Lyon"}'}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
        ]
    )
    text = strategy.render(turns, tools)
    intro = strategy.render_tool_introduction(tools)
    assert intro.count('{"name": "get_weather", "arguments": {"city": "..."}}') == 1  # the example call
    assert json.loads(intro.split("Functions:\n", 1)[1]) == [WEATHER["function"]]
    assert text == (
        "<|im_start|>system\nYou are SmolLM.<|im_end|>\n"
        f"<|im_start|>user\n{intro}\n\nQuestion: Hi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
        "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n"
        '<|im_start|>assistant\n[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "get_weather", "arguments": {"city": "Lyon"}}]<|im_end|>\n'
        "<|im_start|>tool\n18 C<|im_end|>\n<|im_start|>assistant\n"
    )
    assert strategy.render(turns[:2], ()) == (
        "<|im_start|>system\nYou are SmolLM.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>assistant\n"
    )


AGENT_TURNS = [
    {"role": "system", "content": "You are a travel agent."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    {"role": "assistant", "content": "It is 18 C and sunny in Paris."},
    {"role": "user", "content": "And what time is it there?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "call_2", "content": "14:05"},
    {"role": "user", "content": "Thanks. Anything else I should know?"},
]


@pytest.mark.parametrize(
    "strategy",
    [ChatMLToolStrategy(), ChatMLToolStrategy(default_system="You are SmolLM."),
     Llama3ToolStrategy(), Llama3ToolStrategy(tools_in_user_message=False)],
    ids=["chatml", "chatml-default-system", "llama3", "llama3-tools-in-system"],
)
def test_successive_agent_turns_share_the_rendered_prefix_through_the_tool_listing(strategy: object) -> None:
    """Each turn of an agent loop (same tools) renders the previous turn's whole prompt first: the tool
    listing stays where it is, so the prefix cache reuses everything up to the new messages."""
    tools = parse_tools([WEATHER, CLOCK])
    listing = strategy.render_tool_introduction(tools)  # type: ignore[attr-defined]
    turn_ends = [2, 6, 9]  # each turn's request: the conversation up to its newest user message
    prompts = [strategy.render(normalize_messages(AGENT_TURNS[:end]), tools) for end in turn_ends]  # type: ignore[attr-defined]
    for earlier, later in zip(prompts, prompts[1:]):
        assert later.startswith(earlier)
    for prompt in prompts:
        assert prompt.count(listing) == 1
        assert prompt.index(listing) == prompts[0].index(listing)
