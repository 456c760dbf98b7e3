"""Pooling and batch planning of the embedding engine, against plain-Python references (no model)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from realizar_ort.embeddings.engine import plan_batches, pool


def _reference_pool(hidden: np.ndarray, mask: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    rows = []
    for h, m in zip(hidden, mask):
        real = [h[i] for i in range(len(m)) if m[i] == 1]
        if pooling == "mean":
            v = np.sum(real, axis=0) / len(real)
        elif pooling == "cls":
            v = h[0]
        else:
            v = real[-1]
        if normalize:
            v = v / np.linalg.norm(v)
        rows.append(v)
    return np.array(rows, dtype=np.float32)


@pytest.mark.parametrize("pooling", ["mean", "cls", "lasttoken"])
@pytest.mark.parametrize("normalize", [True, False])
def test_pool_matches_reference_on_right_padded_rows(pooling: str, normalize: bool) -> None:
    rng = np.random.default_rng(0)
    lengths = [1, 3, 7, 7, 2]
    width = max(lengths)
    hidden = rng.normal(size=(len(lengths), width, 6)).astype(np.float32)
    mask = np.array([[1] * n + [0] * (width - n) for n in lengths], dtype=np.int64)
    hidden[mask == 0] = 1e6  # padding must never leak into the result
    got = pool(hidden, mask, pooling, normalize)
    np.testing.assert_allclose(got, _reference_pool(hidden, mask, pooling, normalize), rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-6)


def test_pool_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        pool(np.zeros((1, 1, 2), np.float32), np.ones((1, 1), np.int64), "max", False)


def test_plan_batches_sorts_by_length_and_respects_both_limits() -> None:
    lengths = [5, 300, 2, 9, 9, 40, 1, 128]
    batches = plan_batches(lengths, batch_size=3, max_tokens=100)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))  # every input exactly once
    assert [lengths[i] for i in flat] == sorted(lengths)
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 100
    assert [300] in [[lengths[i] for i in b] for b in batches]  # too long alone still runs, alone


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 512), max_size=80), st.integers(1, 64), st.integers(1, 4096))
def test_plan_batches_partitions_any_input(lengths: list[int], batch_size: int, max_tokens: int) -> None:
    batches = plan_batches(lengths, batch_size, max_tokens)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert all(len(b) == 1 or len(b) * max(lengths[i] for i in b) <= max_tokens for b in batches)
