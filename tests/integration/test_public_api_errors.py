"""The public API raises only its documented, typed errors for bad input - never TypeError, RecursionError,
UnicodeError or AttributeError: the cases found by hand (issue 19) and a hypothesis fuzz of argument types
and values over ModelEngine (tiny Llama 3), EmbeddingEngine (MiniLM), compile_json_schema and
generate_with_tools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from realizar_ort import (
    EmbeddingEngine,
    EmbeddingError,
    GrammarError,
    ModelEngine,
    RealizarError,
    SamplingParams,
    TokenVocabulary,
    compile_json_schema,
    generate_with_tools,
)

pytestmark = pytest.mark.slow

TYPED = (RealizarError, GrammarError, EmbeddingError)  # the documented errors (all ValueErrors)
PARAMS = SamplingParams(max_tokens=2, temperature=0)
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                      "properties": {"a": {"type": "string"}}}}}
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def llm(tiny_llama3_dir: Path):
    engine = ModelEngine.from_folder(tiny_llama3_dir)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def embedder(minilm_dir: Path):
    engine = EmbeddingEngine.from_folder(minilm_dir)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def vocab(llm: ModelEngine, tiny_llama3_dir: Path) -> TokenVocabulary:
    spec = llm.manifest.llm
    return TokenVocabulary.from_tokenizer_file(tiny_llama3_dir / "tokenizer.json", vocab_size=spec.vocab_size,
                                               stop_token_ids=spec.eos_token_ids)


def typed_or_ok(call: Any) -> None:
    try:
        call()
    except TYPED:
        pass


def deep_schema(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


# ---- the cases found by hand ------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [5, {"text": "hi"}, [{"type": "image_url", "image_url": {"url": "x"}}], [7]])
def test_non_string_message_content_is_a_typed_error(llm, content):
    with pytest.raises(RealizarError, match=r"messages\[0\]\.content"):
        llm.chat([{"role": "user", "content": content}], PARAMS)


def test_text_parts_are_joined_like_the_server_does(llm):
    parts = [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]
    assert llm.chat([{"role": "user", "content": parts}], PARAMS).text == \
        llm.chat([{"role": "user", "content": "What is 2+2?"}], PARAMS).text


def test_a_lone_surrogate_is_a_typed_error_in_both_engines(llm, embedder):
    with pytest.raises(RealizarError, match="lone surrogate at character 1"):
        llm.generate("a\ud800b", PARAMS)
    with pytest.raises(RealizarError, match="lone surrogate"):
        llm.chat([{"role": "user", "content": "\udfff"}], PARAMS)
    with pytest.raises(EmbeddingError, match="input 1 is not valid Unicode"):
        embedder.embed(["fine", "a\ud800b"])


@pytest.mark.parametrize("stop", [123, 1.5, {"a": 1}, b"x"])
def test_stop_of_the_wrong_type_is_a_typed_error(stop):
    with pytest.raises(RealizarError, match="stop"):
        SamplingParams(stop=stop)


@pytest.mark.parametrize("texts", ["str", None, 5, {"a": "b"}])
def test_embed_of_the_wrong_type_is_a_typed_error(embedder, texts):
    with pytest.raises(EmbeddingError, match="texts must be a list of strings"):
        embedder.embed(texts)


def test_a_schema_a_thousand_levels_deep_is_a_typed_error(llm, vocab):
    with pytest.raises(GrammarError, match="nested too deeply"):
        compile_json_schema(deep_schema(1000), vocab)
    tool = {"type": "function", "function": {"name": "f", "parameters": deep_schema(1000)}}
    with pytest.raises(RealizarError, match="nested too deeply"):
        generate_with_tools(llm, USER, [tool], params=PARAMS)


def test_a_schema_with_a_lone_surrogate_is_a_typed_error(vocab):
    with pytest.raises(GrammarError):
        compile_json_schema({"type": "string", "enum": ["\ud800"]}, vocab)


# ---- fuzz -------------------------------------------------------------------------------------------------

ANY_TEXT = st.text(st.characters(codec=None, categories=None), max_size=12)  # lone surrogates included
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True), ANY_TEXT,
                    st.binary(max_size=4))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(ANY_TEXT, inner, max_size=3)), max_leaves=8)
KEYWORDS = st.sampled_from(["type", "properties", "items", "enum", "const", "required", "anyOf", "oneOf", "allOf",
                            "$ref", "minLength", "maxLength", "minimum", "maximum", "additionalProperties",
                            "minItems", "maxItems", "$defs", "not", "prefixItems", "format"])
TYPES = st.sampled_from(["object", "string", "integer", "number", "boolean", "array", "null"])
SCHEMAS = st.recursive(
    st.one_of(st.booleans(), st.fixed_dictionaries({"type": TYPES}), VALUES),
    lambda inner: st.dictionaries(KEYWORDS, st.one_of(inner, TYPES, st.lists(inner, max_size=2),
                                                      st.dictionaries(ANY_TEXT, inner, max_size=2)), max_size=3),
    max_leaves=6)
CONTENT = st.one_of(ANY_TEXT, VALUES, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": VALUES})))
MESSAGES = st.one_of(VALUES, st.lists(st.one_of(VALUES, st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["user", "system", "assistant", "tool"]), VALUES), "content": CONTENT},
    optional={"tool_calls": VALUES, "name": VALUES, "tool_call_id": VALUES})), max_size=3))
SAMPLING_FIELDS = ["max_tokens", "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
                   "repetition_penalty", "seed", "stop", "stop_token_ids", "logprobs", "top_logprobs",
                   "logit_processors", "skip_special_tokens", "ignore_eos"]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def sampling(values: dict) -> SamplingParams:
    return SamplingParams(**{"max_tokens": 2, **values})


@FUZZ
@given(st.dictionaries(st.sampled_from(SAMPLING_FIELDS), VALUES, max_size=3))
def test_fuzz_sampling_params(values):
    typed_or_ok(lambda: sampling(values))


@FUZZ
@given(prompt=st.one_of(ANY_TEXT, VALUES, st.lists(st.integers(-5, 200_000), max_size=4)))
def test_fuzz_generate(llm, prompt):
    typed_or_ok(lambda: llm.generate(prompt, PARAMS))


@FUZZ
@given(messages=MESSAGES, values=st.dictionaries(st.sampled_from(SAMPLING_FIELDS), VALUES, max_size=2))
def test_fuzz_chat(llm, messages, values):
    typed_or_ok(lambda: llm.chat(messages, sampling(values)))


@FUZZ
@given(texts=st.one_of(VALUES, st.lists(ANY_TEXT, max_size=3)), ids=VALUES)
def test_fuzz_embeddings(embedder, texts, ids):
    typed_or_ok(lambda: embedder.embed(texts))
    typed_or_ok(lambda: embedder.embed_token_ids(ids))


@FUZZ
@given(schema=SCHEMAS)
def test_fuzz_compile_json_schema(vocab, schema):
    typed_or_ok(lambda: compile_json_schema(schema, vocab))


@FUZZ
@given(messages=st.one_of(st.just(USER), MESSAGES),
       tools=st.one_of(VALUES, st.lists(st.one_of(st.just(TOOL), VALUES, st.fixed_dictionaries(
           {"type": st.just("function"), "function": st.fixed_dictionaries(
               {"name": st.one_of(st.just("g"), VALUES), "parameters": SCHEMAS})})), max_size=2)),
       tool_choice=st.one_of(st.sampled_from(["auto", "none", "required"]), VALUES),
       parallel=st.one_of(st.none(), st.booleans(), VALUES))
def test_fuzz_generate_with_tools(llm, messages, tools, tool_choice, parallel):
    typed_or_ok(lambda: generate_with_tools(llm, messages, tools, tool_choice, parallel, PARAMS))
