"""ModelEngine on the real exported models: golden tokens, batch invariance, sampling, stops, UTF-8."""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from realizar_ort.config import LlmModelConfig
from realizar_ort.generation.engine import ModelEngine
from realizar_ort.generation.results import GenerationResult
from realizar_ort.generation.sampling import SamplingParams

PROMPTS = [
    "The capital of France is",
    "Write a short poem about the sea:",
    "1, 2, 3, 4,",
    "def fibonacci(n):",
    "日本の首都は",
    "Emoji time 🎉🦙 and then",
    "Once upon a time, in a land far, far away, there lived a dragon who",
    "Q: What is 2+2?\nA:",
]


@pytest.fixture(scope="module")
def smollm2(smollm2_dir: Path):
    with ModelEngine.from_folder(smollm2_dir) as engine:
        yield engine


@pytest.fixture(scope="module")
def tiny(tiny_llama3_dir: Path):
    with ModelEngine.from_folder(tiny_llama3_dir) as engine:
        yield engine


@pytest.fixture(scope="module")
def tiny_optimum(tiny_llama3_optimum_dir: Path):
    """The same tiny Llama 3 through Optimum's concat-KV graph (PaddedDecoder: left padding, ping-pong KV)."""
    with ModelEngine.from_folder(tiny_llama3_optimum_dir) as engine:
        yield engine


def _golden(folder: Path) -> dict:
    return json.loads((folder / "golden.json").read_text(encoding="utf-8"))


def _check_golden(engine: ModelEngine, folder: Path) -> None:
    golden = _golden(folder)
    params = SamplingParams(max_tokens=golden["max_new_tokens"], temperature=0.0)
    assert max(len(p["prompt_ids"]) for p in golden["prompts"]) > 800  # a long prompt is among them
    for prompt in golden["prompts"]:
        if "messages" in prompt:
            assert engine.render_chat(prompt["messages"], **prompt.get("chat_template_kwargs", {})) == prompt["prompt_text"]
        assert engine.encode_prompt(prompt["prompt_text"]) == prompt["prompt_ids"]
        result = engine.generate(prompt["prompt_ids"], params)
        assert result.token_ids == prompt["greedy_ids"], prompt["prompt_text"][:60]


@pytest.mark.slow
def test_golden_greedy_tokens_smollm2(smollm2: ModelEngine, smollm2_dir: Path) -> None:
    _check_golden(smollm2, smollm2_dir)


def test_golden_greedy_tokens_tiny_llama3(tiny: ModelEngine, tiny_llama3_dir: Path) -> None:
    _check_golden(tiny, tiny_llama3_dir)


def test_golden_greedy_tokens_tiny_llama3_optimum_graph(tiny_optimum: ModelEngine, tiny_llama3_optimum_dir: Path) -> None:
    _check_golden(tiny_optimum, tiny_llama3_optimum_dir)


def test_both_graphs_generate_the_same_tokens(tiny: ModelEngine, tiny_optimum: ModelEngine) -> None:
    params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    assert [tiny.generate(p, params).token_ids for p in PROMPTS] == [
        tiny_optimum.generate(p, params).token_ids for p in PROMPTS
    ]


def _alone_then_together(engine: ModelEngine, jobs: list[tuple[str, SamplingParams]]) -> None:
    alone = [engine.generate(prompt, params).token_ids for prompt, params in jobs]
    streams = [engine.generate_stream(prompt, params) for prompt, params in jobs]  # all queued at once
    together = [GenerationResult.fold(s).token_ids for s in streams]
    assert together == alone


def test_batch_invariance_tiny_llama3(tiny: ModelEngine) -> None:
    # Different prompt lengths (left padding), greedy and seeded rows mixed, different lengths to run.
    jobs = [
        (p, SamplingParams(max_tokens=12 + 3 * i, temperature=0.0 if i % 2 else 0.9, seed=i, ignore_eos=True))
        for i, p in enumerate(PROMPTS)
    ]
    _alone_then_together(tiny, jobs)


def test_batch_invariance_tiny_llama3_optimum_graph(tiny_optimum: ModelEngine) -> None:
    jobs = [
        (p, SamplingParams(max_tokens=12 + 3 * i, temperature=0.0 if i % 2 else 0.9, seed=i, ignore_eos=True))
        for i, p in enumerate(PROMPTS)
    ]
    _alone_then_together(tiny_optimum, jobs)


@pytest.mark.slow
def test_batch_invariance_smollm2(smollm2: ModelEngine) -> None:
    jobs = [(p, SamplingParams(max_tokens=10, temperature=0.0, ignore_eos=True)) for p in PROMPTS]
    _alone_then_together(smollm2, jobs)


def test_sequences_admitted_mid_run_match_running_alone(tiny: ModelEngine) -> None:
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    alone = [tiny.generate(p, params).token_ids for p in PROMPTS[:4]]
    first = tiny.generate_stream(PROMPTS[0], params)
    head = [next(first) for _ in range(10)]  # the first sequence is 10 tokens in when the others join
    late = [tiny.generate_stream(p, params) for p in PROMPTS[1:4]]
    rest = GenerationResult.fold(first)
    assert [t for d in head for t in d.token_ids] + rest.token_ids == alone[0]
    assert [GenerationResult.fold(s).token_ids for s in late] == alone[1:]


def test_seeded_sampling_is_reproducible(tiny: ModelEngine) -> None:
    params = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.95, top_k=50, seed=1234, ignore_eos=True)
    a = tiny.generate(PROMPTS[0], params).token_ids
    b = tiny.generate(PROMPTS[0], params).token_ids
    c = tiny.generate(PROMPTS[0], SamplingParams(**{**params.__dict__, "seed": 4321})).token_ids
    assert a == b
    assert a != c


def test_stop_strings_end_the_text_and_never_leak(tiny: ModelEngine) -> None:
    base = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    full = tiny.generate(PROMPTS[2], base)
    # A stop string that straddles a token boundary, taken from the middle of the greedy text.
    first_len = len(tiny.tokenizer.decode(full.token_ids[:5]))
    stop = full.text[first_len - 2 : first_len + 2]
    assert len(stop) == 4 and stop in full.text
    deltas = list(tiny.generate_stream(PROMPTS[2], SamplingParams(**{**base.__dict__, "stop": (stop,)})))
    streamed = "".join(d.text for d in deltas)
    assert streamed == full.text[: full.text.index(stop)]
    assert all(stop not in d.text for d in deltas)
    assert deltas[-1].finish_reason == "stop" and deltas[-1].stop_reason == stop
    assert len(deltas) < 24  # generation really stopped


def test_stop_token_ids_and_eos(tiny: ModelEngine) -> None:
    full = tiny.generate(PROMPTS[3], SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True))
    target = full.token_ids[5]
    result = tiny.generate(
        PROMPTS[3], SamplingParams(max_tokens=12, temperature=0.0, stop_token_ids=(target,))
    )
    assert result.token_ids == full.token_ids[: full.token_ids.index(target) + 1]
    assert result.finish_reason == "stop" and result.stop_reason == target
    assert result.usage.completion_tokens == len(result.token_ids)


@pytest.mark.slow
def test_utf8_emoji_and_cjk_stream_whole_characters(smollm2: ModelEngine) -> None:
    messages = [{"role": "user", "content": "Say hello in Japanese (こんにちは) and add an emoji 🌍."}]
    params = SamplingParams(max_tokens=23, temperature=0.0)
    deltas = list(smollm2.chat_stream(messages, params))
    result = GenerationResult.fold(iter(deltas))
    assert "こんにちは" in result.text
    assert result.text == smollm2.tokenizer.decode(result.token_ids)
    assert all("\ufffd" not in d.text for d in deltas)
    assert any(d.text == "" for d in deltas)  # some tokens were only part of a character


def test_streamed_text_equals_decode_on_random_tokens(tiny: ModelEngine) -> None:
    # Random weights emit arbitrary byte-level tokens, including partial characters.
    for seed in range(4):
        result = tiny.generate(
            "🦙 中文", SamplingParams(max_tokens=40, temperature=1.5, seed=seed, ignore_eos=True)
        )
        assert result.text == tiny.tokenizer.decode(result.token_ids)


def test_logprobs(tiny: ModelEngine) -> None:
    result = tiny.generate(
        PROMPTS[0], SamplingParams(max_tokens=5, temperature=0.0, logprobs=True, top_logprobs=3)
    )
    assert result.logprobs is not None and len(result.logprobs) == len(result.token_ids)
    for token, lp in zip(result.token_ids, result.logprobs):
        assert lp.token_id == token and lp.logprob <= 0.0
        assert lp.top_logprobs[0].token_id == token  # greedy picks the top-1
        assert [t.logprob for t in lp.top_logprobs] == sorted(
            (t.logprob for t in lp.top_logprobs), reverse=True
        )
        assert bytes(lp.bytes) == tiny.tokenizer.token_bytes(token)


def test_chat_stream_folds_into_chat(smollm2: ModelEngine) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    params = SamplingParams(max_tokens=16, temperature=0.0)
    result = smollm2.chat(messages, params)
    folded = GenerationResult.fold(smollm2.chat_stream(messages, params))
    assert folded.usage.cached_tokens > 0  # the same prompt again: a cache hit
    assert dataclasses.replace(folded, usage=result.usage) == result
    assert "Paris" in result.text
    assert result.finish_reason == "stop" and result.stop_reason == smollm2.tokenizer.token_id("<|im_end|>")


def test_many_threads_get_their_own_answers(tiny: ModelEngine) -> None:
    # 40 callers on 24 threads (more than max_batch_size=16, so some queue); job i repeats job i % 8.
    def job(i: int) -> tuple[str, SamplingParams]:
        k = i % 8
        return PROMPTS[k], SamplingParams(max_tokens=8 + k, temperature=0.8, seed=k, ignore_eos=True)

    expected = [tiny.generate(*job(k)).token_ids for k in range(8)]
    with ThreadPoolExecutor(max_workers=24) as pool:
        got = list(pool.map(lambda i: tiny.generate(*job(i)).token_ids, range(40)))
    assert got == [expected[i % 8] for i in range(40)]


def test_engine_loads_from_config(tiny_llama3_dir: Path) -> None:
    config = LlmModelConfig(path=tiny_llama3_dir, name="tiny", max_batch_size=2, max_context=64)
    with ModelEngine.from_config(config) as engine:
        assert engine.name == "tiny" and engine.max_context == 64
        assert engine.stats()["max_batch_size"] == 2
        result = engine.generate("Hello", SamplingParams(temperature=0.0))
        assert result.finish_reason == "length"
        assert result.usage.completion_tokens == 64 - result.usage.prompt_tokens  # unset max_tokens: clamped
