"""Prefix cache (fused graph): prompts that start with KV computed before load it instead of prefilling it,
and every greedy token stays exactly what the engine gives with the cache off."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from realizar_ort.config import LlmModelConfig, SessionConfig
from realizar_ort.generation.engine import ModelEngine
from realizar_ort.generation.prefix_cache import BLOCK_TOKENS
from realizar_ort.generation.results import GenerationResult
from realizar_ort.generation.sampling import SamplingParams
from realizar_ort.tools.definitions import normalize_messages, parse_tools
from realizar_ort.tools.prompts import strategy_for

CHUNK = 64
GREEDY = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)


def _engine(folder: Path, cache_mb: int, **kw) -> ModelEngine:
    config = LlmModelConfig(path=folder, max_batch_size=4, prefill_chunk_tokens=CHUNK, prefix_cache_mb=cache_mb,
                            session=SessionConfig(intra_op_threads=2), **kw)
    return ModelEngine.from_config(config)


@pytest.fixture(scope="module")
def plain(tiny_llama3_dir: Path) -> Iterator[ModelEngine]:
    with _engine(tiny_llama3_dir, 0) as engine:
        yield engine


@pytest.fixture(scope="module")
def cached(tiny_llama3_dir: Path) -> Iterator[ModelEngine]:
    """Shared by the tests below; each uses prompts of its own (its own random seeds), so its hits depend
    only on what it ran itself."""
    with _engine(tiny_llama3_dir, 64) as engine:
        yield engine


def _golden(folder: Path) -> dict:
    return json.loads((folder / "golden.json").read_text(encoding="utf-8"))


def _random_ids(engine: ModelEngine, n: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(10, min(engine.vocab_size, 30_000), n).tolist()


def _expected_hit(prompt_len: int, kv_len: int) -> int:
    """A later identical prompt loads its own full blocks that the KV kept covers, up to its length - 1."""
    return min(min(prompt_len, kv_len) // BLOCK_TOKENS * BLOCK_TOKENS, prompt_len - 1)


def _check_golden_twice(engine: ModelEngine, folder: Path) -> None:
    golden = _golden(folder)
    params = SamplingParams(max_tokens=golden["max_new_tokens"], temperature=0.0)
    for prompt in golden["prompts"]:
        ids = prompt["prompt_ids"]
        first = engine.generate(ids, params)
        again = engine.generate(ids, params)
        assert first.token_ids == again.token_ids == prompt["greedy_ids"], prompt["prompt_text"][:60]
        # the first run kept prompt + answer (less the last token, never fed): the second loads all of it
        assert again.usage.cached_tokens == _expected_hit(len(ids), len(ids) + len(first.token_ids) - 1)


def test_golden_prompts_with_the_cache_on_tiny_llama3(cached: ModelEngine, tiny_llama3_dir: Path) -> None:
    _check_golden_twice(cached, tiny_llama3_dir)
    stats = cached.stats()
    assert stats["prefix_cache_enabled"] and stats["prefix_cache_hit_tokens"] > 800
    assert 0 < stats["prefix_cache_bytes_in_use"] <= stats["prefix_cache_capacity_bytes"]


@pytest.mark.slow
def test_golden_prompts_with_the_cache_on_smollm2(smollm2_dir: Path) -> None:
    with _engine(smollm2_dir, 128) as engine:
        _check_golden_twice(engine, smollm2_dir)


def test_a_hit_in_the_middle_of_a_chunked_prefill(cached: ModelEngine, plain: ModelEngine) -> None:
    first = _random_ids(cached, 300, seed=1)
    second = first[:200] + _random_ids(cached, 300, seed=2)  # shares 200 tokens: 12 blocks = 192 positions
    assert cached.generate(first, GREEDY).token_ids == plain.generate(first, GREEDY).token_ids
    passes = cached.stats()["prefill_passes"]
    result = cached.generate(second, GREEDY)
    assert result.token_ids == plain.generate(second, GREEDY).token_ids
    assert result.usage.cached_tokens == 192
    assert cached.stats()["prefill_passes"] - passes == -(-(500 - 192) // CHUNK)  # only the rest, chunk by chunk


def test_a_short_rest_after_a_hit_and_a_hit_shorter_than_one_block(cached: ModelEngine, plain: ModelEngine) -> None:
    base = _random_ids(cached, 100, seed=3)
    cached.generate(base, GREEDY)
    short_rest = base[:90] + _random_ids(cached, 5, seed=4)  # 80 cached, 15 prefilled in one pass
    under_a_block = base[: BLOCK_TOKENS - 4] + _random_ids(cached, 30, seed=5)  # shares 12 tokens: no full block
    for ids, hit in ((short_rest, 80), (under_a_block, 0)):
        result = cached.generate(ids, GREEDY)
        assert result.token_ids == plain.generate(ids, GREEDY).token_ids
        assert result.usage.cached_tokens == hit


def test_a_full_cache_evicts_and_stays_within_its_bound(tiny_llama3_dir: Path, plain: ModelEngine) -> None:
    with _engine(tiny_llama3_dir, 1) as small:  # 1 MiB = 2,048 positions of tiny Llama 3
        capacity_tokens = small.stats()["prefix_cache_capacity_bytes"] // (
            small._scheduler.cache.block_bytes // BLOCK_TOKENS
        )
        prompts = [_random_ids(small, 600, seed=10 + i) for i in range(5)]  # 3,000+ positions: more than fits
        for ids in prompts:
            assert small.generate(ids, GREEDY).token_ids == plain.generate(ids, GREEDY).token_ids
            stats = small.stats()
            assert stats["prefix_cache_bytes_in_use"] <= stats["prefix_cache_capacity_bytes"]
        assert capacity_tokens == 2048 and small.stats()["prefix_cache_evicted_blocks"] > 0
        latest = small.generate(prompts[-1], GREEDY)  # the most recent is still whole
        assert latest.usage.cached_tokens == 592
        oldest = small.generate(prompts[0], GREEDY)  # evicted (leaves first): recomputed, same tokens
        assert oldest.usage.cached_tokens < 592
        assert oldest.token_ids == plain.generate(prompts[0], GREEDY).token_ids


def test_concurrent_requests_sharing_a_prefix_being_computed(cached: ModelEngine, plain: ModelEngine) -> None:
    shared_long = _random_ids(cached, 300, seed=20)
    shared_short = _random_ids(cached, 40, seed=21)
    jobs = [shared_long + _random_ids(cached, 20, seed=30 + i) for i in range(3)]
    jobs += [shared_short + _random_ids(cached, 3, seed=40 + i) for i in range(3)]
    alone = [plain.generate(ids, GREEDY).token_ids for ids in jobs]
    with cached._scheduler._cond:  # every request is waiting at the same step boundary
        streams = [cached.generate_stream(ids, GREEDY) for ids in jobs]
    results = [GenerationResult.fold(s) for s in streams]
    assert [r.token_ids for r in results] == alone
    # long prompts are prefilled one at a time, so the later ones load the first one's 288 positions
    assert sorted(r.usage.cached_tokens for r in results[:3]) == [0, 288, 288]


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
TURNS = ["What is the weather in Paris?", "And what should I wear there?", "Thanks! One more: Rome?"]


def _conversation(engine: ModelEngine, with_tools: bool) -> list[tuple[str | None, int, int]]:
    """Three turns of an agent loop (the second with a tool call and its result in the history); each
    turn's prompt is the whole conversation so far. Returns (reply, prompt tokens, cached tokens) per turn."""
    params = SamplingParams(max_tokens=16, temperature=0.0)
    messages: list[dict] = [{"role": "system", "content": "You are a terse travel assistant."}]
    seen = []
    for i, text in enumerate(TURNS):
        messages.append({"role": "user", "content": text})
        if i == 1 and with_tools:
            messages.append({"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]})
            messages.append({"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 9}'})
        if with_tools:
            reply = engine.generate_with_tools(messages, TOOLS, params=params)
            seen.append((reply.content, reply.usage.prompt_tokens, reply.usage.cached_tokens))
            messages.append(reply.to_openai_message())
        else:
            result = engine.chat(messages, params)
            seen.append((result.text, result.usage.prompt_tokens, result.usage.cached_tokens))
            messages.append({"role": "assistant", "content": result.text})
    return seen


@pytest.mark.parametrize(
    ("model", "with_tools"),
    [("tiny_llama3_dir", True), pytest.param("smollm2_dir", False, marks=pytest.mark.slow),
     pytest.param("smollm2_dir", True, marks=pytest.mark.slow)],
)
def test_multi_turn_conversations_match_the_cache_off_engine(
    model: str, with_tools: bool, request: pytest.FixtureRequest
) -> None:
    """Both tool prompts (Llama 3's template, SmolLM2's ChatML strategy) keep the tool listing in place
    (the first user message), as plain chat keeps everything: each turn loads (nearly) the whole previous
    prompt."""
    folder: Path = request.getfixturevalue(model)
    transcripts = []
    for cache_mb in (0, 64):
        with _engine(folder, cache_mb) as engine:
            transcripts.append(_conversation(engine, with_tools))
    off, on = transcripts
    assert [t[:2] for t in on] == [t[:2] for t in off]  # same answers from the same prompts
    assert all(t[2] == 0 for t in off) and on[0][2] == 0
    for previous, current in zip(on, on[1:]):
        assert current[2] >= previous[1] - BLOCK_TOKENS


@pytest.mark.parametrize("model", ["tiny_llama3_dir", "smollm2_dir"])
def test_agent_turns_with_the_same_tools_share_the_token_prefix(model: str, request: pytest.FixtureRequest) -> None:
    """Through each model's own tool prompt and tokenizer: turn 2's prompt ids start with turn 1's whole
    prompt (tool listing included), so the cache can serve all of turn 1 to turn 2."""
    folder: Path = request.getfixturevalue(model)
    with _engine(folder, 0) as engine:
        strategy = strategy_for(engine.manifest, engine.chat_template)
        tools = parse_tools(TOOLS)
        first = [{"role": "system", "content": "You are a terse travel assistant."},
                 {"role": "user", "content": "What is the weather in Paris?"}]
        second = first + [
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 9}'},
            {"role": "assistant", "content": "It is 9 C in Paris."},
            {"role": "user", "content": "And in Rome?"},
        ]
        ids = [engine.encode_prompt(strategy.render(normalize_messages(m), tools, True)) for m in (first, second)]
        assert len(ids[0]) > 100  # the listing is in it
        assert ids[1][: len(ids[0])] == ids[0]


def test_the_optimum_graph_runs_without_a_cache(tiny_llama3_optimum_dir: Path) -> None:
    with _engine(tiny_llama3_optimum_dir, 64) as engine:
        ids = list(range(100, 140))
        first, again = engine.generate(ids, GREEDY), engine.generate(ids, GREEDY)
        assert first.token_ids == again.token_ids and again.usage.cached_tokens == 0
        assert engine.stats()["prefix_cache_enabled"] is False


@pytest.mark.parametrize("model", ["tiny_llama3_dir", "smollm2_dir"])
def test_rendering_is_deterministic(model: str, request: pytest.FixtureRequest, monkeypatch) -> None:
    """Identical conversations render to identical token ids, whatever the time of day or random state:
    nothing per-request (timestamps, random ids) enters our prompts, so the prefix cache can hit."""
    import datetime as real_datetime

    from realizar_ort import chat_template

    folder: Path = request.getfixturevalue(model)
    with _engine(folder, 0) as engine:
        messages = [
            {"role": "system", "content": "You are an agent."},
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_7", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "call_7", "content": "-3 C"},
            {"role": "user", "content": "And tomorrow?"},
        ]
        tools = parse_tools([{"type": "function", "function": {"name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}])
        strategy = strategy_for(engine.manifest, engine.chat_template)

        def render() -> tuple[list[int], list[int]]:
            plain_chat = engine.encode_prompt(engine.render_chat(messages[:2]))
            with_tools = engine.encode_prompt(strategy.render(normalize_messages(messages), tools, True))
            return plain_chat, with_tools

        renders = []
        for hour, seed in ((0, 1), (23, 2)):
            class _Clock(real_datetime.datetime):
                @classmethod
                def now(cls, tz=None):  # same day, another time of day
                    return real_datetime.datetime(2026, 12, 3, hour, 59, 59)

            monkeypatch.setattr(chat_template, "datetime", _Clock)
            random.seed(seed)
            np.random.seed(seed)
            renders.append(render())
        assert renders[0] == renders[1]
