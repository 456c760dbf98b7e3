"""Cheap checks first, caps and system_fingerprint on the real SmolLM2 behind a live server, and the tool
path's context check on the tiny Llama 3 (issue 19)."""

from __future__ import annotations

import re

import httpx
import pytest
from realizar_ort.server.app import create_app
from realizar_ort.server.live import LiveServer

from realizar_ort import ContextLengthError, ModelEngine, SamplingParams, generate_with_tools
from realizar_ort.config import Config, LlmModelConfig, ServerConfig, SessionConfig
from realizar_ort.grammar import matcher

pytestmark = pytest.mark.slow

LLM = "smollm2-135m-instruct"
LONG = "Describe this in detail. " * 120  # ~600 tokens: over a 512-token context


def tools(n: int) -> list[dict]:
    return [{"type": "function", "function": {
        "name": f"tool_{i}", "description": f"Tool number {i}: it looks things up in catalogue {i}.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string", "maxLength": 40 + i},
                                                          "limit": {"type": "integer", "minimum": i}},
                       "required": ["query"]}}} for i in range(n)]


@pytest.fixture(scope="module")
def live(smollm2_dir):
    config = Config(llm=LlmModelConfig(path=smollm2_dir, max_context=512, max_batch_size=4, default_max_tokens=16,
                                       session=SessionConfig(intra_op_threads=2)),
                    server=ServerConfig(port=0, max_tools=8, max_schema_bytes=2048))
    with LiveServer(create_app(config)) as server:
        yield server


def compiles(live) -> float:
    text = httpx.get(live.url + "/metrics").text
    return float(re.search(r"^realizar_grammar_compile_seconds_count (\S+)$", text, re.M).group(1))


def chat(live, content: str, **fields):
    return httpx.post(live.url + "/v1/chat/completions", timeout=60,
                      json={"model": LLM, "messages": [{"role": "user", "content": content}], **fields})


def test_an_over_long_prompt_is_refused_before_its_grammar_is_compiled(live):
    before = compiles(live)
    schema = {"type": "object", "properties": {"answer": {"type": "string", "pattern": "^[a-z]{1,9}$"}}}
    r = chat(live, LONG, response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
    assert compiles(live) == before  # refused without compiling
    ok = chat(live, "Say hi in JSON.", max_tokens=8, response_format={"type": "json_schema",
                                                                      "json_schema": {"name": "a", "schema": schema}})
    assert ok.status_code == 200 and compiles(live) == before + 1  # the metric does count a real compile


def test_tools_and_schema_sizes_are_capped_by_config(live):
    r = chat(live, "hi", tools=tools(9))
    assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_tools" and "8" in r.json()["error"]["message"]
    big = {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 40} for i in range(60)}}
    r = chat(live, "hi", response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": big}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "schema_too_large"
    assert r.json()["error"]["param"] == "response_format.json_schema.schema"
    r = chat(live, "hi", tools=tools(2), max_tokens=4)
    assert r.status_code == 200, r.text


def test_system_fingerprint_on_the_real_model(live):
    body = chat(live, "hi", max_tokens=2).json()
    assert re.fullmatch(r"fp_[0-9a-f]{12}", body["system_fingerprint"])
    assert chat(live, "hello", max_tokens=2).json()["system_fingerprint"] == body["system_fingerprint"]


def test_a_tool_turn_over_the_context_is_refused_before_its_grammar_is_compiled(tiny_llama3_dir):
    engine = ModelEngine.from_config(LlmModelConfig(path=tiny_llama3_dir, max_context=256))
    try:
        cached = len(matcher._compile_cache)
        with pytest.raises(ContextLengthError):
            generate_with_tools(engine, [{"role": "user", "content": LONG}], tools(128),
                                params=SamplingParams(max_tokens=4))
        assert len(matcher._compile_cache) == cached  # no grammar was compiled for the refused turn
    finally:
        engine.close()
