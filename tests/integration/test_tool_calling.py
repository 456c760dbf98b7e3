"""Tool calling end to end on real models: SmolLM2-135M-Instruct (greedy, real answers) and the random-weight
tiny Llama 3 with the real 128k Llama 3.2 vocabulary (validity from the grammar alone)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

import realizar_ort
from realizar_ort.chat_template import ChatTemplate
from realizar_ort.errors import InvalidRequestError
from realizar_ort.generation.engine import ModelEngine
from realizar_ort.generation.sampling import SamplingParams
from realizar_ort.tools.definitions import normalize_messages
from realizar_ort.tools.generate import (
    ToolGenerationResult,
    generate_with_tools,
    generate_with_tools_stream,
    render_tool_prompt,
)
from realizar_ort.tools.prompts import ChatMLToolStrategy, strategy_for
from realizar_ort.tools.template_tools import TemplateToolStrategy

pytestmark = pytest.mark.slow  # real models; seconds per test on two shared cores

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a given city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city name"}},
                   "required": ["city"]}}}
GREEDY = SamplingParams(max_tokens=48, temperature=0)

# Bounded schemas: a random-weight model must still finish every call within max_tokens.
BOUNDED_TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city", "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}},
    {"type": "function", "function": {"name": "add", "parameters": {
        "type": "object",
        "properties": {"a": {"type": "integer", "minimum": -100, "maximum": 100},
                       "b": {"type": "integer", "minimum": 0, "maximum": 10}},
        "required": ["a", "b"]}}},
    {"type": "function", "function": {"name": "set_flags", "parameters": {
        "type": "object",
        "properties": {"flags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
                       "note": {"type": ["string", "null"], "maxLength": 8}},
        "required": ["flags"]}}},
    {"type": "function", "function": {"name": "ping"}},
]
SCHEMAS = {t["function"]["name"]: t["function"].get("parameters", {"type": "object", "maxProperties": 0})
           for t in BOUNDED_TOOLS}


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path):
    with ModelEngine.from_folder(smollm2_dir) as engine:
        yield engine


@pytest.fixture(scope="module")
def tiny(tiny_llama3_dir: Path):
    with ModelEngine.from_folder(tiny_llama3_dir) as engine:
        yield engine


def ask(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def summary(result: ToolGenerationResult) -> tuple:
    usage = result.usage  # without cached_tokens: a repeated prompt is a prefix-cache hit, same answer
    return (result.content, [(c.name, c.arguments_json) for c in result.tool_calls], result.finish_reason,
            result.token_ids, (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens))


# ---- SmolLM2 ---------------------------------------------------------------------------------------------
def test_smollm2_calls_get_weather_for_paris(smollm2: ModelEngine) -> None:
    result = generate_with_tools(smollm2, ask("What is the weather in Paris?"), [WEATHER], "auto", params=GREEDY)
    assert len(result.tool_calls) == 1
    [call] = result.tool_calls
    assert call.name == "get_weather" and call.id.startswith("call_")
    assert call.arguments is not None and "Paris" in call.arguments["city"]
    assert json.loads(call.arguments_json) == call.arguments
    assert result.content is None and result.finish_reason == "tool_calls"


def test_smollm2_answers_arithmetic_in_text(smollm2: ModelEngine) -> None:
    result = generate_with_tools(smollm2, ask("What is 2+2?"), [WEATHER], "auto", params=GREEDY)
    assert result.tool_calls == ()
    assert result.content and result.finish_reason == "stop"


def test_smollm2_named_tool_choice_forces_that_tool(smollm2: ModelEngine) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    result = generate_with_tools(smollm2, ask("What is 2+2?"), [WEATHER], choice, params=GREEDY)
    assert [c.name for c in result.tool_calls] == ["get_weather"]
    assert result.tool_calls[0].arguments is not None and result.finish_reason == "tool_calls"


def test_smollm2_tool_choice_none_never_calls(smollm2: ModelEngine) -> None:
    result = generate_with_tools(smollm2, ask("What is the weather in Paris?"), [WEATHER], "none", params=GREEDY)
    assert result.tool_calls == () and result.content
    assert not result.content.lstrip().startswith("{")  # a call's opening was masked at the start


@pytest.mark.parametrize("question", ["What is the weather in Paris?", "What is 2+2?"])
def test_smollm2_stream_folds_into_the_non_streaming_result(smollm2: ModelEngine, question: str) -> None:
    whole = generate_with_tools(smollm2, ask(question), [WEATHER], "auto", params=GREEDY)
    deltas = list(generate_with_tools_stream(smollm2, ask(question), [WEATHER], "auto", params=GREEDY))
    assert summary(ToolGenerationResult.fold(deltas)) == summary(whole)
    firsts = [d for d in deltas for c in d.tool_calls if c.id is not None]
    assert len(firsts) == len(whole.tool_calls)  # id and name only in each call's first delta
    assert all(d.finish_reason is None for d in deltas[:-1])


def test_smollm2_agent_loop(smollm2: ModelEngine) -> None:
    turns = ask("What is the weather in Paris?")
    first = generate_with_tools(smollm2, turns, [WEATHER], "auto", params=GREEDY)
    assert first.tool_calls
    turns = turns + [first.to_openai_message()] + [
        {"role": "tool", "tool_call_id": c.id, "content": json.dumps({"temperature_c": 18, "sky": "sunny"})}
        for c in first.tool_calls
    ]
    answer = generate_with_tools(smollm2, turns, [WEATHER], "none", params=GREEDY)
    assert answer.content and answer.tool_calls == () and answer.finish_reason in ("stop", "length")


def test_chatml_strategy_renders_tool_free_chat_like_the_model_template(smollm2: ModelEngine) -> None:
    strategy = strategy_for(smollm2.manifest, smollm2.chat_template)
    assert isinstance(strategy, ChatMLToolStrategy)
    for turns in (ask("Hi"), [{"role": "system", "content": "Be terse."}, *ask("Hi"),
                              {"role": "assistant", "content": "Hello."}, *ask("Bye")]):
        assert strategy.render(normalize_messages(turns)) == smollm2.render_chat(turns)


# ---- tiny Llama 3 (random weights, real vocabulary) ------------------------------------------------------
def test_tiny_llama3_required_calls_are_always_valid(tiny: ModelEngine) -> None:
    """Through the folder's Meta-structured template: a call opens with <|python_tag|> or a bare "{", its
    body is the template's own {"name": ..., "parameters": ...}, and it ends with <|eom_id|> or <|eot_id|>.
    Temperature 2: fast-forward writes `{"name":"` as the tokenizer does (token healing), so the name is
    picked in the same context every time, where this random model gives `set_flags` 50 times in 50 at 1."""
    python_tag = tiny.tokenizer.token_id("<|python_tag|>")
    stops = {tiny.tokenizer.token_id("<|eom_id|>"), tiny.tokenizer.token_id("<|eot_id|>")}
    names, openings = set(), set()
    for seed in range(50):
        params = SamplingParams(max_tokens=120, temperature=2.0, seed=seed)
        result = generate_with_tools(tiny, ask("Do something useful."), BOUNDED_TOOLS, "required", params=params)
        assert result.finish_reason == "tool_calls", (seed, result)
        first = result.token_ids[0]
        assert first == python_tag or tiny.tokenizer.token_bytes(first).startswith(b"{"), (seed, result.token_ids)
        assert result.token_ids[-1] in stops
        body = tiny.tokenizer.decode(result.token_ids[first == python_tag : -1], skip_special_tokens=False)
        assert list(json.loads(body)) == ["name", "parameters"], body  # the template's call shape, no "type"
        assert len(result.tool_calls) == 1
        call = result.tool_calls[0]
        assert call.arguments is not None, (seed, call)
        jsonschema.validate(call.arguments, SCHEMAS[call.name])
        names.add(call.name)
        openings.add("python_tag" if first == python_tag else "bare json")
    assert len(names) >= 2  # the union of the tools, not one of them
    assert openings  # (which opening a random-weight model prefers is its own business)


def test_tiny_llama3_named_choice_calls_that_tool(tiny: ModelEngine) -> None:
    choice = {"type": "function", "function": {"name": "add"}}
    for seed in range(5):
        result = generate_with_tools(tiny, ask("Add."), BOUNDED_TOOLS, choice,
                                     params=SamplingParams(max_tokens=80, temperature=1.0, seed=seed))
        assert [c.name for c in result.tool_calls] == ["add"]
        jsonschema.validate(result.tool_calls[0].arguments, SCHEMAS["add"])


def test_tiny_llama3_streams_fold_into_the_non_streaming_result(tiny: ModelEngine) -> None:
    kinds = set()
    for seed in range(12):
        choice = "required" if seed % 2 else "auto"  # random weights almost never open a call on their own
        params = SamplingParams(max_tokens=60, temperature=1.0, seed=seed)
        whole = generate_with_tools(tiny, ask("Hello"), BOUNDED_TOOLS, choice, params=params)
        folded = ToolGenerationResult.fold(generate_with_tools_stream(tiny, ask("Hello"), BOUNDED_TOOLS, choice,
                                                                      params=params))
        assert summary(folded) == summary(whole)
        kinds.add("call" if whole.tool_calls else "text")
        for call in whole.tool_calls:
            if whole.finish_reason == "tool_calls":
                jsonschema.validate(call.arguments, SCHEMAS[call.name])
    assert kinds == {"call", "text"}


def test_tiny_llama3_exports_with_our_meta_structured_template(tiny: ModelEngine, tiny_llama3_dir: Path) -> None:
    shipped = Path(realizar_ort.__file__).parent / "templates" / "llama3.jinja"
    assert (tiny_llama3_dir / "chat_template.jinja").read_text(encoding="utf-8") == shipped.read_text(encoding="utf-8")
    strategy = strategy_for(tiny.manifest, tiny.chat_template)
    assert isinstance(strategy, TemplateToolStrategy)
    assert (strategy.call_format.name_key, strategy.call_format.arguments_key) == ("name", "parameters")


def test_tiny_llama3_prompt_is_the_model_folder_template(tiny: ModelEngine, tiny_llama3_dir: Path) -> None:
    template = ChatTemplate.from_file(tiny_llama3_dir / "chat_template.jinja", {"bos_token": "<|begin_of_text|>"})
    turns = [
        {"role": "system", "content": "You help."}, *ask("Weather in Zürich?"),
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": '{"city": "Zürich"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "3 C"},
    ]
    date = {"date_string": "25 Nov 2026"}
    for messages in (turns, turns[1:], turns[:2]):
        for tool_set in (BOUNDED_TOOLS, []):
            prompt = render_tool_prompt(tiny, messages, tool_set, date)
            assert prompt == template.render(normalize_messages(messages), tools=tool_set or None, **date)
            assert prompt == tiny.render_chat(normalize_messages(messages), tools=tool_set or None, **date)
            if len(messages) > 2:
                assert '{"name": "get_weather", "parameters": {"city": "Zürich"}}<|eot_id|>' in prompt
                assert '<|start_header_id|>ipython<|end_header_id|>\n\n"3 C"<|eot_id|>' in prompt


def test_tiny_llama3_round_trip_through_the_template(tiny: ModelEngine) -> None:
    """A call the model made goes back into the next prompt exactly as the template writes a past call."""
    date = {"date_string": "25 Nov 2026"}
    turns = ask("Weather in Paris?")
    params = SamplingParams(max_tokens=80, temperature=1.0, seed=11)
    first = generate_with_tools(tiny, turns, BOUNDED_TOOLS, "required", params=params, template_kwargs=date)
    [made] = first.tool_calls
    turns = turns + [first.to_openai_message(),
                     {"role": "tool", "tool_call_id": made.id, "content": json.dumps({"ok": True})}]
    prompt = render_tool_prompt(tiny, turns, BOUNDED_TOOLS, date)
    past = json.dumps({"name": made.name, "parameters": made.arguments}, ensure_ascii=False)
    assert "<|start_header_id|>assistant<|end_header_id|>\n\n" + past + "<|eot_id|>" in prompt
    assert prompt.endswith('ipython<|end_header_id|>\n\n"{\\"ok\\": true}"<|eot_id|>'
                           "<|start_header_id|>assistant<|end_header_id|>\n\n")
    answer = generate_with_tools(tiny, turns, BOUNDED_TOOLS, "none", params=SamplingParams(max_tokens=12, seed=1),
                                 template_kwargs=date)
    assert answer.tool_calls == () and answer.usage.prompt_tokens == len(tiny.encode_prompt(prompt))


def test_parallel_calls_are_refused_for_llama3(tiny: ModelEngine) -> None:
    with pytest.raises(InvalidRequestError) as info:
        generate_with_tools(tiny, ask("Hi"), BOUNDED_TOOLS, "auto", parallel_tool_calls=True, params=GREEDY)
    assert info.value.param == "parallel_tool_calls"
    result = generate_with_tools(tiny, ask("Hi"), BOUNDED_TOOLS, "required", parallel_tool_calls=False,
                                 params=SamplingParams(max_tokens=80, temperature=1.0, seed=3))
    assert len(result.tool_calls) == 1


def test_unenforceable_tool_schema_is_refused_naming_the_tool(tiny: ModelEngine) -> None:
    bad = {"type": "function", "function": {"name": "fuzzy", "parameters": {
        "type": "object", "properties": {"x": {"type": "string", "dependentSchemas": {}}}}}}
    with pytest.raises(InvalidRequestError) as info:
        generate_with_tools(tiny, ask("Hi"), [WEATHER, bad], "auto", params=GREEDY)
    assert info.value.param == "tools[1].function.parameters"
    assert "dependentSchemas" in str(info.value)


def test_engine_methods_are_the_tool_generation_functions(smollm2_dir: Path) -> None:
    """`ModelEngine.generate_with_tools` (and its stream) give what the module functions give."""
    from realizar_ort.generation.engine import ModelEngine
    from realizar_ort.generation.sampling import SamplingParams

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    params = SamplingParams(max_tokens=40, temperature=0.0)
    named = {"type": "function", "function": {"name": "get_weather"}}
    with ModelEngine.from_folder(smollm2_dir) as engine:
        method = engine.generate_with_tools(messages, tools, tool_choice=named, params=params)
        function = generate_with_tools(engine, messages, tools, named, None, params)
        streamed = list(engine.generate_with_tools_stream(messages, tools, tool_choice=named, params=params))
    assert method.tool_calls and method.tool_calls[0].name == "get_weather"
    assert [(c.name, c.arguments) for c in method.tool_calls] == [(c.name, c.arguments) for c in function.tool_calls]
    assert streamed and streamed[-1].finish_reason == method.finish_reason == "tool_calls"
