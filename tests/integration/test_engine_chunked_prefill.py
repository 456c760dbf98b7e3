"""Chunked prefill (fused graph): a long prompt is prefilled a chunk per step while other rows keep decoding,
and every sequence still gets exactly the tokens it gets alone."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from realizar_ort.config import LlmModelConfig
from realizar_ort.generation.engine import ModelEngine
from realizar_ort.generation.results import GenerationResult
from realizar_ort.generation.sampling import SamplingParams

CHUNK = 64


@pytest.fixture(scope="module")
def chunked(tiny_llama3_dir: Path):
    config = LlmModelConfig(path=tiny_llama3_dir, max_batch_size=4, prefill_chunk_tokens=CHUNK,
                            prefix_cache_mb=0)  # repeated prompts must be prefilled again here
    with ModelEngine.from_config(config) as engine:
        yield engine


class _Recorder:
    """A no-op logit processor that logs which request the scheduler sampled, in the scheduler's order."""

    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name

    def process(self, generated_ids: Sequence[int], logits: np.ndarray) -> None:
        self.log.append(self.name)


def _golden(folder: Path) -> dict:
    return json.loads((folder / "golden.json").read_text(encoding="utf-8"))


def test_chunked_prompts_keep_the_golden_tokens(chunked: ModelEngine, tiny_llama3_dir: Path) -> None:
    golden = _golden(tiny_llama3_dir)
    params = SamplingParams(max_tokens=golden["max_new_tokens"], temperature=0.0)
    assert any(len(p["prompt_ids"]) > 10 * CHUNK for p in golden["prompts"])
    for prompt in golden["prompts"]:
        assert chunked.generate(prompt["prompt_ids"], params).token_ids == prompt["greedy_ids"]


def test_running_rows_keep_decoding_while_a_long_prompt_prefills(chunked: ModelEngine, tiny_llama3_dir: Path) -> None:
    long_prompt = max((p["prompt_ids"] for p in _golden(tiny_llama3_dir)["prompts"]), key=len)
    chunks = -(-len(long_prompt) // CHUNK)
    log: list[str] = []
    running_params = SamplingParams(
        max_tokens=400, temperature=0.0, ignore_eos=True, logit_processors=(_Recorder(log, "running"),)
    )
    long_params = SamplingParams(
        max_tokens=8, temperature=0.0, ignore_eos=True, logit_processors=(_Recorder(log, "long"),)
    )
    alone_running = chunked.generate("Tell me a story", running_params).token_ids
    alone_long = chunked.generate(long_prompt, long_params).token_ids

    log.clear()
    running = chunked.generate_stream("Tell me a story", running_params)
    next(running)  # in the batch and decoding
    before = len(log)
    long_result = chunked.generate(long_prompt, long_params)
    steps_while_prefilling = log[before : log.index("long")].count("running")
    assert steps_while_prefilling >= chunks - 1  # one decode step per chunk, not one stall for the whole prompt
    assert long_result.token_ids == alone_long
    assert GenerationResult.fold(running).token_ids == alone_running[1:]  # the first token was taken above


def test_chunked_prompts_and_short_ones_together_match_alone(chunked: ModelEngine, tiny_llama3_dir: Path) -> None:
    prompts = [p["prompt_ids"] for p in _golden(tiny_llama3_dir)["prompts"]]
    long_prompt = max(prompts, key=len)
    jobs = [long_prompt, *prompts, long_prompt[: 3 * CHUNK + 5], "short one", long_prompt[:200]]
    params = [SamplingParams(max_tokens=6 + 4 * (i % 3), temperature=0.0, ignore_eos=True) for i in range(len(jobs))]
    alone = [chunked.generate(p, sp).token_ids for p, sp in zip(jobs, params)]
    streams = [chunked.generate_stream(p, sp) for p, sp in zip(jobs, params)]  # more than max_batch_size at once
    assert [GenerationResult.fold(s).token_ids for s in streams] == alone


def test_cancelling_a_prompt_mid_prefill_frees_its_row(chunked: ModelEngine, tiny_llama3_dir: Path) -> None:
    long_prompt = max((p["prompt_ids"] for p in _golden(tiny_llama3_dir)["prompts"]), key=len)
    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    abandoned = chunked.generate_stream(long_prompt, params)
    abandoned.cancel()
    after = chunked.generate(long_prompt, params).token_ids
    assert after == chunked.generate(long_prompt, params).token_ids
    stats = chunked.stats()
    assert stats["running"] == 0 and stats["waiting"] == 0
