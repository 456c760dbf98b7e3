"""Reading calls back: the incremental scanner, fail-soft parsing, and folding a stream into a result."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realizar_ort.generation.results import Usage
from realizar_ort.tools.generate import ToolCallDelta, ToolGenerationDelta, ToolGenerationResult
from realizar_ort.tools.parsing import CallScanner, parse_tool_calls

BODIES = [
    '{"type": "function", "name": "get_weather", "parameters": {"city": "Pa\\"ris}", "n": [1, {"a": "}"}]}}',
    '{"name":"f","arguments":{}}\n{"name":"g","arguments":{"x":1.5e3,"s":"a\\\\"}}',
    '{"arguments": {"x": true}, "name": "late"}',
    '{"name":"f","arguments":{"x": "a b  "  }  }  ',
    '{"name": "f", "arguments": {"x": 1}',  # cut off
    '{"name": "ü", "arguments": {"emoji": "🙂"}}',
]


def _fold(events: list) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for e in events:
        call = out.setdefault(e.index, {"name": None, "arguments": ""})
        if e.name is not None:
            assert call["name"] is None, "a call's name is reported once"
            call["name"] = e.name
        else:
            assert call["name"] is not None, "fragments only after the name"
        call["arguments"] += e.arguments
    return out


@settings(max_examples=200, deadline=None)
@given(body=st.sampled_from(BODIES), cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_fragments_add_up_to_the_arguments_text_however_the_text_is_cut(body: str, cuts: list[int]) -> None:
    points = sorted({c % (len(body) + 1) for c in cuts} | {0, len(body)})
    scanner = CallScanner()
    events = []
    for a, b in itertools.pairwise(points):
        events += scanner.feed(body[a:b])
    folded = _fold(events)
    result = scanner.result()
    assert sorted(folded) == [i for i, c in enumerate(result) if c.name is not None]
    for index, call in folded.items():
        assert call["name"] == result[index].name
        assert call["arguments"] == result[index].arguments_text


def test_arguments_text_is_the_exact_source_slice() -> None:
    scanner = CallScanner()
    scanner.feed(BODIES[0])
    [call] = scanner.result()
    assert call.complete and call.name == "get_weather"
    assert call.arguments_text == '{"city": "Pa\\"ris}", "n": [1, {"a": "}"}]}'
    assert json.loads(call.arguments_text) == {"city": 'Pa"ris}', "n": [1, {"a": "}"}]}


def test_trailing_whitespace_is_held_back_until_the_value_ends() -> None:
    scanner = CallScanner()
    events = scanner.feed('{"name": "f", "arguments": {"a": 1}   ')
    assert "".join(e.arguments for e in events) == '{"a": 1}'
    events = scanner.feed("}")
    assert all(e.arguments == "" for e in events)
    assert scanner.result()[0].complete


@pytest.mark.parametrize(
    ("text", "calls"),
    [
        ('{"name": "f", "arguments": {"x": 1}}', [("f", '{"x": 1}')]),
        ('{"name":"f","arguments":{}}\n{"name":"g","arguments":{"y":[]}}', [("f", "{}"), ("g", '{"y":[]}')]),
        ('{"type": "function", "name": "f", "parameters": {"x": 1}}', [("f", '{"x": 1}')]),
    ],
)
def test_parse_complete_calls(text: str, calls: list) -> None:
    assert parse_tool_calls(text) == (None, calls)


@pytest.mark.parametrize(
    "text",
    [
        "The weather is nice.",
        '{"name": "f", "arguments": {"x": 1}',  # cut off
        '{"name": "f", "arguments": {"x": 1,}}',  # not JSON
        '{"name": 3, "arguments": {}}',  # name not a string
        '{"name": "f", "arguments": [1]}',  # arguments not an object
        '{"name": "f"}',  # no arguments
        'Sure! {"name": "f", "arguments": {}}',  # text before a JSON-at-start call
        '{"name": "f", "arguments": {}} and then some',
        '{"name": "unknown", "arguments": {}}',  # not a known tool
        "{{{{",
    ],
)
def test_call_looking_text_that_does_not_parse_stays_content(text: str) -> None:
    assert parse_tool_calls(text, known_names=frozenset({"f"})) == (text, [])


USAGE = Usage(5, 3, 8)


def test_fold_rebuilds_calls_from_deltas() -> None:
    deltas = [
        ToolGenerationDelta(content="Let me check. ", token_ids=(1,)),
        ToolGenerationDelta(tool_calls=(ToolCallDelta(0, "call_a", "get_weather", '{"ci'),), token_ids=(2,)),
        ToolGenerationDelta(tool_calls=(ToolCallDelta(0, arguments='ty": "Paris"}'),), token_ids=(3,)),
        ToolGenerationDelta(finish_reason="tool_calls", usage=USAGE, token_ids=(4,)),
    ]
    result = ToolGenerationResult.fold(deltas)
    assert result.content == "Let me check. "
    assert [(c.id, c.name, c.arguments_json, c.arguments) for c in result.tool_calls] == [
        ("call_a", "get_weather", '{"city": "Paris"}', {"city": "Paris"})
    ]
    assert result.finish_reason == "tool_calls" and result.token_ids == [1, 2, 3, 4]
    message = result.to_openai_message()
    assert message["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'


def test_fold_content_is_null_beside_calls_and_empty_string_without() -> None:
    only_call = [
        ToolGenerationDelta(tool_calls=(ToolCallDelta(0, "call_a", "f", "{}"),)),
        ToolGenerationDelta(finish_reason="tool_calls", usage=USAGE),
    ]
    assert ToolGenerationResult.fold(only_call).content is None
    assert ToolGenerationResult.fold([ToolGenerationDelta(finish_reason="stop", usage=USAGE)]).content == ""
    with pytest.raises(ValueError):
        ToolGenerationResult.fold([ToolGenerationDelta(content="x")])


def test_parallel_calls_as_an_array() -> None:
    text = '[{"name":"f","arguments":{"x":1}},{"name":"g","arguments":{}}]'
    assert parse_tool_calls(text) == (None, [("f", '{"x":1}'), ("g", "{}")])
