"""Batched prefill (fused graph): short prompts admitted at one step boundary run right-padded in one pass,
and every slot, every first token and every later token is exactly what the prompt gives alone."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from realizar_ort.config import LlmModelConfig, SessionConfig
from realizar_ort.generation.decoder_inplace import InPlaceDecoder
from realizar_ort.generation.engine import ModelEngine
from realizar_ort.generation.results import GenerationResult
from realizar_ort.generation.sampling import SamplingParams
from realizar_ort.manifest import load_manifest
from realizar_ort.onnx_session import create_session

LENGTHS = (23, 7, 1, 16, 23)  # mixed, with a one-token prompt and a tie for the longest


def _prompts(vocab: int, lengths: tuple[int, ...] = LENGTHS, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(10, min(vocab, 30_000), n).tolist() for n in lengths]


@pytest.mark.parametrize("model", ["tiny_llama3_dir", "smollm2_dir"])
def test_prefill_batch_is_bitwise_what_each_prompt_writes_alone(model: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(model)
    spec = load_manifest(folder).llm
    k = len(LENGTHS)
    decoder = InPlaceDecoder(create_session(folder / "model.onnx", SessionConfig(intra_op_threads=2)), spec, 2 * k, 64)
    prompts = _prompts(spec.vocab_size)
    alone = []
    for prompt in prompts:  # slots 0 .. k-1, one pass each
        alone.append(decoder.prefill(prompt).copy())
        decoder.admit()
    together = decoder.prefill_batch(prompts)  # slots k .. 2k-1, one right-padded pass
    assert together.shape == (k, spec.vocab_size)
    for j, prompt in enumerate(prompts):
        assert np.array_equal(together[j], alone[j]), f"logits of prompt {j} ({len(prompt)} tokens)"
        for t in range(decoder.kv.num_tensors):
            own = decoder.kv.slots(t, j, j + 1)[:, :, : len(prompt)]
            batched = decoder.kv.slots(t, k + j, k + j + 1)[:, :, : len(prompt)]
            assert np.array_equal(own, batched), f"KV tensor {t} of prompt {j}"


def test_prefill_batch_refuses_more_prompts_than_free_slots(tiny_llama3_dir: Path) -> None:
    spec = load_manifest(tiny_llama3_dir).llm
    decoder = InPlaceDecoder(create_session(tiny_llama3_dir / "model.onnx", SessionConfig(intra_op_threads=2)), spec, 2, 64)
    decoder.prefill([5, 6])
    decoder.admit()
    with pytest.raises(RuntimeError, match="do not fit"):
        decoder.prefill_batch([[1, 2], [3, 4]])


@pytest.fixture(scope="module")
def tiny(tiny_llama3_dir: Path) -> Iterator[ModelEngine]:
    config = LlmModelConfig(path=tiny_llama3_dir, max_batch_size=8, prefill_chunk_tokens=128, prefix_cache_mb=0,
                            session=SessionConfig(intra_op_threads=2))
    with ModelEngine.from_config(config) as engine:
        yield engine


@contextmanager
def _one_boundary(engine: ModelEngine) -> Iterator[None]:
    """Requests submitted inside the block are all waiting when the scheduler next admits: the test holds
    the scheduler's (re-entrant) lock, which it takes to pick up new requests."""
    with engine._scheduler._cond:
        yield


def _passes(engine: ModelEngine) -> int:
    return int(engine.stats()["prefill_passes"])


def _burst(engine: ModelEngine, jobs: list[tuple[list[int], SamplingParams]]) -> tuple[list[list[int]], int]:
    before = _passes(engine)
    with _one_boundary(engine):
        streams = [engine.generate_stream(ids, params) for ids, params in jobs]
    tokens = [GenerationResult.fold(s).token_ids for s in streams]
    return tokens, _passes(engine) - before


def test_a_burst_is_prefilled_in_one_pass_with_the_tokens_each_gives_alone(tiny: ModelEngine) -> None:
    prompts = _prompts(tiny.spec.vocab_size, seed=1)
    # Greedy and seeded rows; the third ends at its first token, so the rows after it move down a slot.
    jobs = [
        (ids, SamplingParams(max_tokens=1 if i == 2 else 10 + i, temperature=0.0 if i % 2 else 0.8, seed=i,
                             ignore_eos=True))
        for i, ids in enumerate(prompts)
    ]
    alone = [tiny.generate(ids, params).token_ids for ids, params in jobs]
    together, passes = _burst(tiny, jobs)
    assert passes == 1
    assert together == alone
    assert [len(t) for t in together] == [10, 11, 1, 13, 14]


def test_bursts_are_split_so_no_pass_pads_past_the_prefill_budget(tiny: ModelEngine) -> None:
    prompts = _prompts(tiny.spec.vocab_size, lengths=(40,) * 6, seed=2)  # 3 x 40 = 120 <= 128 < 4 x 40
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    alone = [tiny.generate(ids, params).token_ids for ids in prompts]
    together, passes = _burst(tiny, [(ids, params) for ids in prompts])
    assert together == alone
    assert passes == 2  # 240 prompt tokens, at most 128 per boundary: two boundaries of one 3-prompt pass each
