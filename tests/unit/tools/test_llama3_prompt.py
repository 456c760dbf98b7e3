"""`Llama3ToolStrategy` (the fallback for Llama 3 models whose template cannot render tools), byte for byte
against Meta's published prompt-format examples, and its mirror template ``llama3_docs.jinja`` against it.

The expected strings are copied verbatim from meta-llama/llama-models (each cites its file and section).
Where an example uses something other than JSON tool calling (Llama 3.2's pythonic call in the E2E
example), that call is given to the renderer as the assistant's text, which is how the example's history
reads; the system header, the ipython result and the follow-up header are still rendered by us.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from realizar_ort.chat_template import ChatTemplate
from realizar_ort.tools.definitions import ToolDefinition, normalize_messages, parse_tools
from realizar_ort.tools.parsing import parse_tool_calls
from realizar_ort.tools.prompts import Llama3ToolStrategy, pretty_json

TEMPLATE = Path(__file__).resolve().parent / "llama3_docs.jinja"

# models/llama3_1/prompt_format.md, "Llama 3.1 Instruct Model / User and assistant conversation", input prompt
DOC_31_CHAT = """<|begin_of_text|><|start_header_id|>system<|end_header_id|>

You are a helpful assistant<|eot_id|><|start_header_id|>user<|end_header_id|>

Answer who are you in the form of jeopardy?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

"""

# models/llama3_1/prompt_format.md, "JSON based tool calling", input prompt
DOC_31_JSON_TOOLS = """<|begin_of_text|><|start_header_id|>system<|end_header_id|>

Environment: ipython

Cutting Knowledge Date: December 2023
Today Date: 21 September 2024

You are a helpful assistant.
<|eot_id|><|start_header_id|>user<|end_header_id|>

Answer the user's question by making use of the following functions if needed.
If none of the function can be used, please say so.
Here is a list of functions in JSON format:
{
    "type": "function",
    "function": {
        "name": "trending_songs",
        "description": "Returns the trending songs on a Music site",
        "parameters": {
            "type": "object",
            "properties": [
                {
                    "n": {
                        "type": "object",
                        "description": "The number of songs to return"
                    }
                },
                {
                    "genre": {
                        "type": "object",
                        "description": "The genre of the songs to return"
                    }
                }
            ],
            "required": ["n"]
        }
    }
}

Return function calls in JSON format.<|eot_id|><|start_header_id|>user<|end_header_id|>

Use tools to get latest trending songs<|eot_id|><|start_header_id|>assistant<|end_header_id|>

"""

# models/llama3_1/prompt_format.md, "JSON based tool calling", model response
DOC_31_JSON_TOOLS_REPLY = """<|python_tag|>{
    "type": "function",
    "name": "trending_songs",
    "parameters": {
        "n": "10",
        "genre": "all"
    }
}<|eom_id|>"""

# models/llama3_2/text_prompt_format.md, "User and assistant conversation", input prompt
DOC_32_CHAT = """<|begin_of_text|><|start_header_id|>system<|end_header_id|>

You are a helpful assistant<|eot_id|><|start_header_id|>user<|end_header_id|>

Who are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

"""

# models/llama3_2/text_prompt_format.md, "Zero shot function calling E2E format", input prompt
DOC_32_E2E = """<|begin_of_text|><|start_header_id|>system<|end_header_id|>

You are an expert in composing functions. You are given a question and a set of possible functions.
Based on the question, you will need to make one or more function/tool calls to achieve the purpose.
If none of the function can be used, point it out. If the given question lacks the parameters required by the function,
also point it out. You should only return the function call in tools call sections.

If you decide to invoke any of the function(s), you MUST put it in the format of [func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]
You SHOULD NOT include any other text in the response.

Here is a list of functions in JSON format that you can invoke.

[
    {
        "name": "get_weather",
        "description": "Get weather info for places",
        "parameters": {
            "type": "dict",
            "required": [
                "city"
            ],
            "properties": {
                "city": {
                    "type": "string",
                    "description": "The name of the city to get the weather for"
                },
                "metric": {
                    "type": "string",
                    "description": "The metric for weather. Options are: celsius, fahrenheit",
                    "default": "celsius"
                }
            }
        }
    }
]<|eot_id|><|start_header_id|>user<|end_header_id|>

What is the weather in SF?<|eot_id|><|start_header_id|>assistant<|end_header_id|>

<|python_tag|>[get_weather(city="San Francisco", metric="celsius")]<|eot_id|><|start_header_id|>ipython<|end_header_id|>

"25 C"<|eot_id|><|start_header_id|>assistant<|end_header_id|>

"""

# The tool of the "JSON based tool calling" example, as the OpenAI-shaped entry the listing shows.
TRENDING_SONGS = {
    "type": "function",
    "function": {
        "name": "trending_songs",
        "description": "Returns the trending songs on a Music site",
        "parameters": {
            "type": "object",
            "properties": [
                {"n": {"type": "object", "description": "The number of songs to return"}},
                {"genre": {"type": "object", "description": "The genre of the songs to return"}},
            ],
            "required": ["n"],
        },
    },
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather's <details> & more",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Zürich"]}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


def _template() -> ChatTemplate:
    return ChatTemplate.from_file(TEMPLATE)


def _both(strategy: Llama3ToolStrategy, messages: list, tools: list) -> tuple[str, str]:
    definitions = parse_tools(tools)
    normalized = normalize_messages(messages)
    by_strategy = strategy.render(normalized, definitions)
    by_template = _template().render(
        normalized, tools=[t.to_openai() for t in definitions] or None, **strategy.template_variables()
    )
    return by_strategy, by_template


# ---- Meta's examples, byte for byte ------------------------------------------------------------------
def test_json_tool_calling_prompt_matches_meta_example() -> None:
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Use tools to get latest trending songs"},
    ]
    strategy = Llama3ToolStrategy(date_string="21 September 2024")
    by_strategy, by_template = _both(strategy, messages, [TRENDING_SONGS])
    assert by_strategy == DOC_31_JSON_TOOLS
    assert by_template == DOC_31_JSON_TOOLS


@pytest.mark.parametrize(
    ("expected", "question"),
    [(DOC_31_CHAT, "Answer who are you in the form of jeopardy?"), (DOC_32_CHAT, "Who are you?")],
)
def test_plain_chat_matches_meta_example(expected: str, question: str) -> None:
    messages = [{"role": "system", "content": "You are a helpful assistant"}, {"role": "user", "content": question}]
    by_strategy, by_template = _both(Llama3ToolStrategy(), messages, [])
    assert by_strategy == expected
    assert by_template == expected


def test_e2e_tool_result_and_follow_up_match_meta_example() -> None:
    system = DOC_32_E2E.split("<|end_header_id|>\n\n", 1)[1].split("<|eot_id|>", 1)[0]
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": "What is the weather in SF?"},
        {"role": "assistant", "content": '<|python_tag|>[get_weather(city="San Francisco", metric="celsius")]'},
        {"role": "tool", "tool_call_id": "call_1", "content": '"25 C"'},
    ]
    by_strategy, by_template = _both(Llama3ToolStrategy(), messages, [])
    assert by_strategy == DOC_32_E2E
    assert by_template == DOC_32_E2E
    assert by_strategy.endswith('<|start_header_id|>ipython<|end_header_id|>\n\n"25 C"<|eot_id|>'
                                "<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_meta_example_reply_is_a_call_our_grammar_schema_accepts() -> None:
    """The documented reply (python tag, JSON body, eom) parses into the call and fits the call schema."""
    strategy = Llama3ToolStrategy()
    fmt = strategy.call_format
    assert DOC_31_JSON_TOOLS_REPLY.startswith(fmt.opening_token)
    assert DOC_31_JSON_TOOLS_REPLY.endswith(fmt.stop_tokens[0])
    body = DOC_31_JSON_TOOLS_REPLY[len(fmt.opening_token) : -len("<|eom_id|>")]
    content, calls = parse_tool_calls(body, fmt.name_key, (fmt.arguments_key,), frozenset({"trending_songs"}))
    assert content is None
    assert calls == [("trending_songs", '{\n        "n": "10",\n        "genre": "all"\n    }')]
    songs = ToolDefinition(
        "trending_songs",
        parameters={"type": "object", "properties": {"n": {"type": "string"}, "genre": {"type": "string"}}},
    )
    jsonschema.validate(json.loads(body), fmt.call_schema([songs]))


def test_past_call_renders_like_meta_reference_encoder() -> None:
    """models/llama3/tool_utils.py encodes a JSON custom call as json.dumps({"type", "name", "parameters"});
    our history adds the python tag and eom the documented reply carries."""
    strategy = Llama3ToolStrategy()
    calls = [{"function": {"name": "trending_songs", "arguments": {"n": "10", "genre": "all"}}}]
    expected = json.dumps({"type": "function", "name": "trending_songs", "parameters": {"n": "10", "genre": "all"}})
    assert strategy.render_tool_calls(calls) == "<|python_tag|>" + expected + "<|eom_id|>"


# ---- multi-turn, placement options, template == strategy ----------------------------------------------
AGENT_TURNS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Zürich?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 3}'},
    {"role": "assistant", "content": "3 °C."},
    {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "text", "text": "tomorrow?"}]},
]


def test_multi_turn_with_calls_and_results_renders_exactly() -> None:
    by_strategy, by_template = _both(Llama3ToolStrategy(), AGENT_TURNS, [WEATHER])
    listing = Llama3ToolStrategy().render_tool_introduction(parse_tools([WEATHER]))
    expected = (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n\nBe brief.\n<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n" + listing + "<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWeather in Zürich?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
        '<|python_tag|>{"type": "function", "name": "get_weather", "parameters": {"city": "Zürich"}}<|eom_id|>'
        '<|start_header_id|>ipython<|end_header_id|>\n\n{"temperature_c": 3}<|eot_id|>'
        "<|start_header_id|>assistant<|end_header_id|>\n\n3 °C.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nAnd tomorrow?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert by_strategy == expected
    assert by_template == expected
    assert '\\"' not in by_strategy  # arguments parsed before rendering, never double-encoded


def test_tool_listing_is_meta_pretty_json() -> None:
    listing = Llama3ToolStrategy().render_tool_introduction(parse_tools([WEATHER]))
    assert '"enum": ["Paris", "Zürich"]' in listing  # arrays of scalars stay inline, non-ASCII kept
    assert "Get the weather's <details> & more" in listing  # no HTML escaping
    assert json.loads(listing.split("JSON format:\n", 1)[1].rsplit("\n\nReturn", 1)[0]) == WEATHER


@pytest.mark.parametrize("tools_in_user_message", [True, False])
@pytest.mark.parametrize("date_string", [None, "26 Jul 2024"])
@pytest.mark.parametrize("tools", [[], [WEATHER], [WEATHER, TRENDING_SONGS]])
@pytest.mark.parametrize("turns", [AGENT_TURNS, AGENT_TURNS[1:], AGENT_TURNS[1:2], AGENT_TURNS[:2]])
def test_template_equals_strategy(tools_in_user_message: bool, date_string: str | None, tools: list, turns: list) -> None:
    strategy = Llama3ToolStrategy(tools_in_user_message=tools_in_user_message, date_string=date_string)
    by_strategy, by_template = _both(strategy, turns, tools)
    assert by_strategy == by_template


def test_tools_in_system_message_option() -> None:
    strategy = Llama3ToolStrategy(tools_in_user_message=False)
    text = strategy.render(normalize_messages(AGENT_TURNS[1:2]), parse_tools([WEATHER]))
    system = text.split("<|eot_id|>", 1)[0]
    assert system.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\n")
    assert "Here is a list of functions in JSON format:" in system
    assert text.count("<|start_header_id|>user<|end_header_id|>") == 1


@pytest.mark.parametrize(
    "value",
    [{}, [], {"a": []}, {"a": {"b": [1, 2, {"c": None}]}, "d": [True, 1.5, "x"]}, [[1], [2, 3]], "é\"\\", 7],
)
def test_pretty_json_round_trips_and_matches_template_macro(value: object) -> None:
    text = pretty_json(value)
    assert json.loads(text) == value
    macro = ChatTemplate(TEMPLATE.read_text(encoding="utf-8").split("{%- macro tool_listing")[0] + "{{ pretty_json(v, 0) }}")
    assert macro.render([], v=value) == text
