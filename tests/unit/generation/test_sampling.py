"""SamplingParams validation and the sampler's filters, penalties, RNG and logprobs (no model)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realizar_ort.errors import InvalidRequestError
from realizar_ort.generation.sampling import RequestSampler, SamplingParams, _nucleus, sample_batch

VOCAB = 1000


def _logits(seed: int = 0, vocab: int = VOCAB) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 2, vocab).astype(np.float32)


def _draws(params: SamplingParams, logits: np.ndarray, n: int) -> list[int]:
    sampler = RequestSampler(params, prompt_ids=[], vocab_size=logits.shape[0])
    return [sampler.choose(logits.copy(), []).token_id for _ in range(n)]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"min_p": 1.1}, "min_p"),
        ({"presence_penalty": 3.0}, "presence_penalty"),
        ({"frequency_penalty": -2.5}, "frequency_penalty"),
        ({"repetition_penalty": 0.0}, "repetition_penalty"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"seed": "7"}, "seed"),
        ({"stop": ("ok", "")}, "stop"),
        ({"stop_token_ids": (-1,)}, "stop_token_ids"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"logit_processors": (object(),)}, "logit_processors"),
    ],
)
def test_bad_params_are_refused_naming_the_field(kwargs: dict, param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        SamplingParams(**kwargs)
    assert info.value.param == param
    assert isinstance(info.value, ValueError)


def test_stop_accepts_a_single_string_and_lists() -> None:
    assert SamplingParams(stop="END").stop == ("END",)
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")  # type: ignore[arg-type]
    assert SamplingParams(stop_token_ids=[3, 4]).stop_token_ids == (3, 4)  # type: ignore[arg-type]


def test_greedy_is_argmax() -> None:
    logits = _logits(1)
    assert _draws(SamplingParams(temperature=0.0), logits, 3) == [int(np.argmax(logits))] * 3


def test_same_seed_same_tokens_different_seed_different_tokens() -> None:
    logits = np.zeros(VOCAB, dtype=np.float32)  # flat: every draw is pure RNG
    a = _draws(SamplingParams(seed=1234), logits, 30)
    b = _draws(SamplingParams(seed=1234), logits, 30)
    c = _draws(SamplingParams(seed=1235), logits, 30)
    assert a == b
    assert a != c


def test_top_k_only_samples_the_k_best() -> None:
    logits = _logits(2)
    best = set(np.argsort(-logits)[:5].tolist())
    drawn = _draws(SamplingParams(top_k=5, temperature=5.0, seed=0), logits, 300)
    assert set(drawn) <= best
    assert len(set(drawn)) == 5  # at temperature 5 all five appear in 300 draws


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = np.array([0.05, 0.5, 0.15, 0.3])
    logits = np.log(probs).astype(np.float32)
    assert set(_draws(SamplingParams(top_p=0.8, seed=0), logits, 300)) == {1, 3}
    assert set(_draws(SamplingParams(top_p=0.81, seed=0), logits, 300)) == {1, 2, 3}


def test_min_p_drops_tokens_below_a_fraction_of_the_best() -> None:
    probs = np.array([0.4, 0.3, 0.2, 0.1])
    logits = np.log(probs).astype(np.float32)
    assert set(_draws(SamplingParams(min_p=0.45, seed=0), logits, 300)) == {0, 1, 2}
    assert set(_draws(SamplingParams(min_p=0.6, seed=0), logits, 300)) == {0, 1}


def test_draws_follow_the_softmax_distribution() -> None:
    probs = np.array([0.1, 0.2, 0.3, 0.4])
    logits = np.log(probs).astype(np.float32)
    drawn = np.array(_draws(SamplingParams(seed=42), logits, 20000))
    freq = np.bincount(drawn, minlength=4) / drawn.size
    np.testing.assert_allclose(freq, probs, atol=0.015)


def test_temperature_sharpens() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.2])).astype(np.float32)
    cold = np.array(_draws(SamplingParams(temperature=0.2, seed=3), logits, 2000))
    assert (cold == 0).mean() > 0.9


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits() -> None:
    logits = np.array([3.0, -2.0, 2.0, 0.5], dtype=np.float32)
    sampler = RequestSampler(
        SamplingParams(repetition_penalty=2.0, temperature=0.0), prompt_ids=[0, 1], vocab_size=4
    )
    row = logits.copy()
    assert sampler.choose(row, []).token_id == 2  # the prompt's token 0 (3.0) fell to 1.5
    np.testing.assert_allclose(row, [1.5, -4.0, 2.0, 0.5])


def test_presence_and_frequency_penalties_count_generated_tokens() -> None:
    sampler = RequestSampler(
        SamplingParams(presence_penalty=0.5, frequency_penalty=0.25, temperature=0.0),
        prompt_ids=[3],
        vocab_size=4,
    )
    for token in (1, 1, 2):
        sampler.record(token)
    row = np.zeros(4, dtype=np.float32)
    sampler.choose(row, [1, 1, 2])
    np.testing.assert_allclose(row, [0.0, -1.0, -0.75, 0.0])


def test_forget_undoes_a_recorded_token_for_every_penalty() -> None:
    """Token healing takes a sampled token back: the penalties then count as if it had never come."""
    params = SamplingParams(presence_penalty=0.5, frequency_penalty=0.25, repetition_penalty=2.0, temperature=0.0)
    sampler = RequestSampler(params, prompt_ids=[3], vocab_size=4)
    for token in (1, 1, 2, 3):
        sampler.record(token)
    sampler.forget(2, [1, 1, 3])
    sampler.forget(1, [1, 3])
    sampler.forget(3, [1])  # in the prompt: the repetition penalty still sees it
    fresh = RequestSampler(params, prompt_ids=[3], vocab_size=4)
    fresh.record(1)
    logits = np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32)
    a, b = logits.copy(), logits.copy()
    sampler.choose(a, [1])
    fresh.choose(b, [1])
    np.testing.assert_allclose(a, b)


class _AllowOnly:
    def __init__(self, token: int) -> None:
        self.token = token
        self.seen: list[list[int]] = []

    def process(self, generated_ids, logits):
        self.seen.append(list(generated_ids))
        keep = logits[self.token]
        logits[:] = -np.inf
        logits[self.token] = keep


def test_logit_processors_run_first_and_see_generated_ids() -> None:
    processor = _AllowOnly(7)
    params = SamplingParams(logit_processors=(processor,), repetition_penalty=1.5, seed=0)
    sampler = RequestSampler(params, prompt_ids=[7], vocab_size=VOCAB)
    assert sampler.choose(_logits(4), [5, 6]).token_id == 7
    assert processor.seen == [[5, 6]]


def test_logprobs_are_of_the_raw_distribution_with_sorted_top() -> None:
    logits = _logits(5)
    raw = logits.astype(np.float64) - np.log(np.exp(logits.astype(np.float64)).sum())
    params = SamplingParams(temperature=0.0, logprobs=True, top_logprobs=3, logit_processors=(_AllowOnly(9),))
    sampled = RequestSampler(params, prompt_ids=[], vocab_size=VOCAB).choose(logits.copy(), [])
    assert sampled.token_id == 9
    assert sampled.logprob == pytest.approx(raw[9], abs=1e-6)
    assert list(sampled.top_ids) == np.argsort(-raw)[:3].tolist()
    np.testing.assert_allclose(sampled.top_logprobs, np.sort(raw)[::-1][:3], atol=1e-6)


def test_a_rows_tokens_do_not_depend_on_its_batch_companions() -> None:
    rows = np.stack([_logits(i) for i in range(4)])
    alone = [
        s.token_id
        for s in sample_batch(rows[:1].copy(), [RequestSampler(SamplingParams(seed=9), [], VOCAB)], [[]])
    ]
    for _ in range(3):
        companions = [RequestSampler(SamplingParams(seed=s, top_p=0.9), [], VOCAB) for s in (1, 2, 3)]
        mixed = sample_batch(
            rows.copy(), [RequestSampler(SamplingParams(seed=9), [], VOCAB), *companions], [[]] * 4
        )
        assert mixed[0].token_id == alone[0]


def test_sample_batch_greedy_rows_match_argmax() -> None:
    rows = np.stack([_logits(i) for i in range(6)])
    samplers = [RequestSampler(SamplingParams(temperature=0.0), [], VOCAB) for _ in range(6)]
    got = [s.token_id for s in sample_batch(rows.copy(), samplers, [[]] * 6)]
    assert got == np.argmax(rows, axis=1).tolist()


def test_a_lone_greedy_row_gets_the_batched_argmax_ties_included() -> None:
    rows = np.stack([_logits(i) for i in range(6)])
    rows[5, [7, 300]] = rows[5].max() + 1.0  # a tie: the first of the two maxima wins, as in a batch
    batched = [s.token_id for s in sample_batch(rows.copy(), [_greedy() for _ in range(6)], [[]] * 6)]
    alone = [sample_batch(rows[i : i + 1].copy(), [_greedy()], [[]])[0].token_id for i in range(6)]
    assert alone == batched == np.argmax(rows, axis=1).tolist()
    assert alone[5] == 7
    assert alone == [_greedy().choose(row.copy(), []).token_id for row in rows]


def _greedy() -> RequestSampler:
    return RequestSampler(SamplingParams(temperature=0.0), [], VOCAB)


@settings(max_examples=60, deadline=None)
@given(
    probs=st.lists(st.floats(0.001, 1.0), min_size=2, max_size=3000),
    top_p=st.floats(0.05, 0.999),
)
def test_nucleus_matches_a_full_sort(probs: list[float], top_p: float) -> None:
    p = np.array(probs)
    p /= p.sum()
    got = _nucleus(p, top_p)
    order = np.argsort(-p, kind="stable")
    cumulative = np.cumsum(p[order])
    n = min(int(np.searchsorted(cumulative, top_p, side="left")) + 1, p.size)
    np.testing.assert_allclose(np.sort(p[got]), np.sort(p[order[:n]]))  # same mass set (ties may swap ids)
    assert got.size == n
