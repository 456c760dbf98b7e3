"""ModelEngine limits and lifecycle on the tiny Llama 3: cancellation, queue, context, vocabulary, errors."""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np
import pytest

from realizar_ort.config import LlmModelConfig
from realizar_ort.errors import ContextLengthError, EngineClosedError, InvalidRequestError, QueueFullError
from realizar_ort.generation.engine import ModelEngine
from realizar_ort.generation.results import GenerationResult
from realizar_ort.generation.sampling import SamplingParams

LONG = SamplingParams(max_tokens=1500, temperature=0.0, ignore_eos=True)
SHORT = SamplingParams(max_tokens=5, temperature=0.0, ignore_eos=True)


@pytest.fixture()
def small(tiny_llama3_dir: Path):
    config = LlmModelConfig(path=tiny_llama3_dir, max_batch_size=2, max_queued=1, max_context=2048)
    with ModelEngine.from_config(config) as engine:
        yield engine


def _wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_cancel_frees_the_slot_for_a_waiting_request(small: ModelEngine) -> None:
    a = small.generate_stream("a", LONG)
    next(a)  # prefilled (one at a time: max_queued=1)
    b = small.generate_stream("b", LONG)
    next(b)  # both running: the batch (2 rows) is full
    c = small.generate_stream("c", SHORT)
    assert small.stats()["waiting"] == 1
    with pytest.raises(QueueFullError):
        small.generate_stream("d", SHORT)  # max_queued=1
    a.cancel()
    assert len(GenerationResult.fold(c).token_ids) == 5  # ran in a's slot...
    assert not b.finished  # ...while b is still generating its 1,500 tokens
    _wait_for(lambda: small.stats()["running"] == 1, "a and c to leave the batch")
    b.close()
    _wait_for(lambda: small.stats()["running"] == 0, "the batch to empty after close()")


def test_abandoned_streams_free_their_slots(small: ModelEngine) -> None:
    stream = small.generate_stream("x", LONG)
    for _ in stream:
        break  # a caller that stops reading and drops the stream
    del stream
    gc.collect()
    with small.generate_stream("y", LONG) as held:
        next(held)
    _wait_for(lambda: small.stats()["running"] == 0, "dropped and exited streams to be retired")


def test_context_overflow_is_refused_up_front(tiny_llama3_dir: Path) -> None:
    config = LlmModelConfig(path=tiny_llama3_dir, max_context=64, default_max_tokens=512)
    with ModelEngine.from_config(config) as engine:
        prompt = engine.tokenizer.encode(" word" * 60)[:60]
        with pytest.raises(ContextLengthError, match="lower max_tokens to at most 4") as info:
            engine.generate(prompt, SamplingParams(max_tokens=5))
        assert info.value.param == "max_tokens"
        with pytest.raises(ContextLengthError):
            engine.generate(engine.tokenizer.encode(" word" * 70)[:64], SamplingParams(max_tokens=1))
        result = engine.generate(prompt, SamplingParams(temperature=0.0, ignore_eos=True))  # unset: clamped
        assert result.finish_reason == "length" and len(result.token_ids) == 4
        assert engine.stats()["waiting"] == 0


def test_prompts_outside_the_model_vocabulary_are_refused(small: ModelEngine) -> None:
    assert small.tokenizer.vocab_size == 128257 and small.vocab_size == 128256
    for bad in ([1, 128256], [-1], [], [1.5], "<|image|>", b"bytes"):
        with pytest.raises(InvalidRequestError) as info:
            small.generate(bad, SHORT)  # type: ignore[arg-type]
        assert info.value.param == "prompt"
    with pytest.raises(InvalidRequestError, match="SamplingParams"):
        small.generate("hi", {"max_tokens": 3})  # type: ignore[arg-type]


class _ForceToken:
    def __init__(self, token: int) -> None:
        self.token = token

    def process(self, generated_ids, logits: np.ndarray) -> None:
        logits[np.arange(logits.shape[0]) != self.token] = -np.inf


class _FailOnThirdStep:
    def process(self, generated_ids, logits: np.ndarray) -> None:
        if len(generated_ids) == 2:
            raise RuntimeError("processor broke")


def test_logit_processors_shape_tokens_and_their_failures_stay_local(small: ModelEngine) -> None:
    forced = small.generate("hi", SamplingParams(max_tokens=4, seed=1, logit_processors=(_ForceToken(1234),)))
    assert forced.token_ids == [1234] * 4
    healthy = small.generate_stream("hello", SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True))
    first = next(healthy)  # admitted (max_queued=1), so both share the batch
    broken = small.generate_stream(
        "hello", SamplingParams(max_tokens=20, logit_processors=(_FailOnThirdStep(),))
    )
    with pytest.raises(RuntimeError, match="processor broke"):
        GenerationResult.fold(broken)
    assert len(first.token_ids) + len(GenerationResult.fold(healthy).token_ids) == 20


def test_close_ends_in_flight_and_refuses_new_requests(tiny_llama3_dir: Path) -> None:
    engine = ModelEngine.from_folder(tiny_llama3_dir)
    stream = engine.generate_stream("a", LONG)
    next(stream)
    engine.close()
    with pytest.raises(EngineClosedError):
        GenerationResult.fold(stream)
    with pytest.raises(EngineClosedError):
        engine.generate("b", SHORT)
