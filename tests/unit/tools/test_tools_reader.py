"""Reading a reply back into content and tool calls, on the real Llama 3.2 tokenizer with a scripted engine.

The engine here replays fixed token ids (what a model would have sampled), so the reader's handling of
text before ``<|python_tag|>``, argument streaming, truncation and fail-soft fallback is checked exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from realizar_ort.generation.results import GenerationDelta, Usage
from realizar_ort.generation.sampling import SamplingParams
from realizar_ort.tokenizer import Tokenizer
from realizar_ort.tools.generate import ToolGenerationResult, generate_with_tools, generate_with_tools_stream
from realizar_ort.tools.hybrid_sampler import HybridSampler

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


class ScriptedEngine:
    """Just enough of ModelEngine: replays `script` (token ids) one delta per token."""

    def __init__(self, tokenizer_json: Path) -> None:
        self.tokenizer = Tokenizer.from_file(tokenizer_json)
        self.vocab_size = 128256
        self.model_dir = tokenizer_json.parent
        self.manifest = SimpleNamespace(name="scripted-llama3", tokenizer_file=tokenizer_json.name,
                                        llm=SimpleNamespace(chat_format="llama3"))
        self.chat_template = None
        self.script: list[int] = []
        self.finish = "stop"
        self.seen_params: SamplingParams | None = None
        self.seen_prompt = ""

    def ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def generate_stream(self, prompt: str, params: SamplingParams) -> _Stream:
        self.seen_prompt, self.seen_params = prompt, params
        stops = set(params.stop_token_ids)
        n = len(self.script)

        def deltas() -> Iterator[GenerationDelta]:
            for i, token in enumerate(self.script):
                last = i == n - 1
                text = "" if token in stops else self.tokenizer.decode([token])
                yield GenerationDelta(text, (token,), self.finish if last else None,
                                      Usage(10, n, 10 + n) if last else None)

        return _Stream(deltas())


class _Stream:
    def __init__(self, it: Iterator[GenerationDelta]) -> None:
        self._it = it

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> GenerationDelta:
        return next(self._it)

    def cancel(self) -> None:
        pass


@pytest.fixture(scope="module")
def engine(llama3_tokenizer_json: Path) -> ScriptedEngine:
    return ScriptedEngine(llama3_tokenizer_json)


def run(engine: ScriptedEngine, script: list[int], choice: object = "auto", finish: str = "stop"):
    engine.script, engine.finish = script, finish
    deltas = list(generate_with_tools_stream(engine, [{"role": "user", "content": "Weather?"}], TOOLS, choice))
    return deltas, generate_with_tools(engine, [{"role": "user", "content": "Weather?"}], TOOLS, choice)


def test_text_then_python_tag_then_call(engine: ScriptedEngine) -> None:
    tag, eom = engine.tokenizer.token_id("<|python_tag|>"), engine.tokenizer.token_id("<|eom_id|>")
    body = '{"type": "function", "name": "get_weather", "parameters": {"city": "Zürich"}}'
    deltas, result = run(engine, engine.ids("Let me check.") + [tag] + engine.ids(body) + [eom])
    assert result.content == "Let me check."
    [call] = result.tool_calls
    assert (call.name, call.arguments_json, call.arguments) == ("get_weather", '{"city": "Zürich"}', {"city": "Zürich"})
    assert result.finish_reason == "tool_calls"
    assert ToolGenerationResult.fold(deltas).content == result.content
    firsts = [c for d in deltas for c in d.tool_calls if c.id is not None]
    assert len(firsts) == 1 and firsts[0].name == "get_weather"
    assert "".join(c.arguments for d in deltas for c in d.tool_calls) == call.arguments_json
    # the request carried the tool sampler first and the format's stop tokens
    params = engine.seen_params
    assert isinstance(params.logit_processors[0], HybridSampler)
    assert {engine.tokenizer.token_id("<|eom_id|>"), engine.tokenizer.token_id("<|eot_id|>")} <= set(params.stop_token_ids)
    assert engine.seen_prompt.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython")


def test_json_at_start_is_a_call_too(engine: ScriptedEngine) -> None:
    eot = engine.tokenizer.token_id("<|eot_id|>")
    body = '{"type":"function","name":"get_weather","parameters":{"city":"Oslo"}}'
    _, result = run(engine, engine.ids(body) + [eot], choice="required")
    assert result.content is None and [c.arguments for c in result.tool_calls] == [{"city": "Oslo"}]


def test_a_call_cut_by_max_tokens_keeps_its_partial_arguments(engine: ScriptedEngine) -> None:
    tag = engine.tokenizer.token_id("<|python_tag|>")
    body = '{"type": "function", "name": "get_weather", "parameters": {"city": "Par'
    _, result = run(engine, [tag] + engine.ids(body), finish="length")
    [call] = result.tool_calls
    assert call.name == "get_weather" and call.arguments is None and call.arguments_json == '{"city": "Par'
    assert result.finish_reason == "length"


def test_call_text_without_a_name_falls_back_to_content(engine: ScriptedEngine) -> None:
    tag = engine.tokenizer.token_id("<|python_tag|>")
    body = '{"type": "function", "na'
    _, result = run(engine, [tag] + engine.ids(body), finish="length")
    assert result.tool_calls == () and result.content == body and result.finish_reason == "length"


def test_under_none_json_looking_text_is_content(engine: ScriptedEngine) -> None:
    eot = engine.tokenizer.token_id("<|eot_id|>")
    text = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
    _, result = run(engine, engine.ids(text) + [eot], choice="none")
    assert result.tool_calls == () and result.content == text and result.finish_reason == "stop"
    assert json.loads(result.content)["name"] == "get_weather"


def test_a_call_cut_by_a_stop_string_is_not_reported_as_complete(engine: ScriptedEngine) -> None:
    tag = engine.tokenizer.token_id("<|python_tag|>")
    body = '{"type": "function", "name": "get_weather", "parameters": {"city": "Par'
    _, result = run(engine, [tag] + engine.ids(body), finish="stop")
    assert result.finish_reason == "stop" and result.tool_calls[0].arguments is None
