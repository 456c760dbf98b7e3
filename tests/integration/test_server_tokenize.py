"""``/tokenize``, ``/detokenize`` and ``chat_template_kwargs`` on a live server with the tiny Llama 3 (real
Llama 3.2 tokenizer, exported with our Meta-structured template): the prompt shown is the one transformers
renders from the folder's template, and the one ``/v1/chat/completions`` feeds the model."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from realizar_ort.server.app import create_app
from realizar_ort.server.live import LiveServer

from realizar_ort.config import Config, LlmModelConfig, ServerConfig, SessionConfig
from realizar_ort.generation.engine import ModelEngine

pytestmark = pytest.mark.slow

MODEL = "tiny-llama3"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"]}}}
ROUND_TRIP = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Zürich?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature_c": 3}'},
]
DATE = {"date_string": "25 Nov 2026"}


@pytest.fixture(scope="module")
def engine(tiny_llama3_dir: Path):
    config = LlmModelConfig(path=tiny_llama3_dir, name=MODEL, max_batch_size=2, max_context=2048,
                            session=SessionConfig(intra_op_threads=2))
    with ModelEngine.from_config(config) as e:
        yield e


@pytest.fixture(scope="module")
def live(engine):
    with LiveServer(create_app(Config(llm=engine.config, server=ServerConfig(port=0)), llm=engine)) as server:
        yield server


def post(live, path: str, body: dict, **kwargs) -> httpx.Response:
    return httpx.post(live.url + path, json=body, timeout=120, **kwargs)


def error_of(r: httpx.Response, status: int, param: str | None) -> str:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param, error
    return error["message"]


def test_tokenize_shows_what_transformers_renders_from_the_model_folder(live, tiny_llama3_dir: Path) -> None:
    transformers = pytest.importorskip("transformers", reason="the oracle needs the export extra")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_llama3_dir) if (
        tiny_llama3_dir / "tokenizer_config.json").exists() else transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(tiny_llama3_dir / "tokenizer.json"), bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    tokenizer.chat_template = (tiny_llama3_dir / "chat_template.jinja").read_text(encoding="utf-8")
    oracle_messages = json.loads(json.dumps(ROUND_TRIP))
    oracle_messages[2]["tool_calls"][0]["function"]["arguments"] = {"city": "Zürich"}  # parsed, as vLLM does
    expected = tokenizer.apply_chat_template(oracle_messages, tools=[WEATHER], add_generation_prompt=True,
                                             tokenize=False, **DATE)
    r = post(live, "/tokenize", {"model": MODEL, "messages": ROUND_TRIP, "tools": [WEATHER],
                                 "chat_template_kwargs": DATE})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prompt"] == expected
    assert '{"name": "get_weather", "parameters": {"city": "Zürich"}}<|eot_id|>' in body["prompt"]
    assert "Today Date: 25 Nov 2026" in body["prompt"]
    assert body["tokens"] == tokenizer.encode(expected, add_special_tokens=False)  # the text starts with BOS
    assert body["count"] == len(body["tokens"]) and body["max_model_len"] == 2048
    back = post(live, "/detokenize", {"model": MODEL, "tokens": body["tokens"]})
    assert back.status_code == 200 and back.json() == {"prompt": expected}


@pytest.mark.parametrize("kwargs", [DATE, {**DATE, "tools_in_user_message": False}])
def test_chat_completion_starts_from_the_prompt_tokenize_shows(live, kwargs: dict) -> None:
    shown = post(live, "/tokenize", {"model": MODEL, "messages": ROUND_TRIP[:2], "tools": [WEATHER],
                                     "chat_template_kwargs": kwargs}).json()
    done = post(live, "/v1/chat/completions", {
        "model": MODEL, "messages": ROUND_TRIP[:2], "tools": [WEATHER], "tool_choice": "required",
        "chat_template_kwargs": kwargs, "max_tokens": 40, "temperature": 1.0, "seed": 3})
    assert done.status_code == 200, done.text
    assert done.json()["usage"]["prompt_tokens"] == shown["count"]
    assert done.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    in_system = shown["prompt"].split("<|eot_id|>", 1)[0]
    assert ("get_weather" in in_system) == (kwargs.get("tools_in_user_message") is False)


def test_plain_chat_and_prompt_forms(live, engine) -> None:
    chat = post(live, "/tokenize", {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                                    "add_generation_prompt": False, "chat_template_kwargs": DATE}).json()
    assert chat["prompt"] == engine.render_chat([{"role": "user", "content": "Hi"}], False, **DATE)
    assert not chat["prompt"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    plain = post(live, "/tokenize", {"model": MODEL, "prompt": "Hello world", "return_token_strs": True}).json()
    bos = engine.tokenizer.token_id("<|begin_of_text|>")
    assert plain["tokens"][0] == bos and plain["token_strs"][0] == "<|begin_of_text|>"
    bare = post(live, "/tokenize", {"model": MODEL, "prompt": "Hello world", "add_special_tokens": False}).json()
    assert bare["tokens"] == plain["tokens"][1:] and bare["prompt"] == "Hello world"


def test_bad_bodies_are_400s_naming_the_field(live) -> None:
    ask = [{"role": "user", "content": "Hi"}]
    assert "either" in error_of(post(live, "/tokenize", {"model": MODEL, "prompt": "x", "messages": ask}), 400, "prompt")
    error_of(post(live, "/tokenize", {"model": MODEL}), 400, "messages")
    error_of(post(live, "/tokenize", {"model": MODEL, "prompt": 5}), 400, "prompt")
    error_of(post(live, "/tokenize", {"model": MODEL, "prompt": "x", "tools": []}), 400, "tools")
    error_of(post(live, "/tokenize", {"model": MODEL, "messages": ask, "chat_template_kwargs": []}), 400,
             "chat_template_kwargs")
    error_of(post(live, "/tokenize", {"model": MODEL, "messages": ask, "chat_template_kwargs": {"tools": []}}), 400,
             "chat_template_kwargs.tools")
    error_of(post(live, "/v1/chat/completions", {"model": MODEL, "messages": ask,
                                                 "chat_template_kwargs": {"messages": []}}), 400,
             "chat_template_kwargs.messages")
    error_of(post(live, "/v1/chat/completions", {"model": MODEL, "messages": ask,
                                                 "chat_template_kwargs": {"1x": 1}}), 400, "chat_template_kwargs")
    error_of(post(live, "/tokenize", {"model": "nope", "prompt": "x"}), 404, "model")
    error_of(post(live, "/detokenize", {"model": MODEL, "tokens": [1, 10**9]}), 400, "tokens[1]")
    error_of(post(live, "/detokenize", {"model": MODEL, "tokens": "1 2"}), 400, "tokens")
    # the template refuses tools without a user message to put them in: a 400, not a 500
    error_of(post(live, "/tokenize", {"model": MODEL, "messages": [{"role": "system", "content": "S"}],
                                      "tools": [WEATHER]}), 400, "messages")


def test_tokenize_is_behind_the_api_keys(engine) -> None:
    config = Config(llm=engine.config, server=ServerConfig(port=0, api_keys=("sekrit",)))
    with LiveServer(create_app(config, llm=engine)) as server:
        body = {"model": MODEL, "prompt": "Hi"}
        assert post(server, "/tokenize", body).status_code == 401
        assert post(server, "/detokenize", {"model": MODEL, "tokens": [1]}).status_code == 401
        assert post(server, "/tokenize", body, headers={"Authorization": "Bearer sekrit"}).status_code == 200
