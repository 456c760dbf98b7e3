"""KVCache bookkeeping (no model): left-padded rows, growth, compaction and trimming keep every row intact."""

from __future__ import annotations

import numpy as np

from realizar_ort.generation.kv_cache import KVCache
from realizar_ort.manifest import LlmSpec

SPEC = LlmSpec(
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=3,
    hidden_size=12,
    vocab_size=10,
    tokenizer_vocab_size=10,
    context_length=64,
    eos_token_ids=(0,),
    bos_token_id=None,
    pad_token_id=None,
    add_bos_token=False,
    chat_format="chatml",
)


def _presents(length: int, tag: float) -> list[np.ndarray]:
    """Per KV tensor t: [1, kv_heads, length, head_dim] filled with recognisable values."""
    base = np.arange(length, dtype=np.float32)[None, None, :, None] + 1.0
    return [np.broadcast_to(tag * 100 + t * 10 + base, (1, 2, length, 3)).copy() for t in range(4)]


def _row(cache: KVCache, row: int, tensor: int, length: int) -> np.ndarray:
    """The last `length` slots of a row (its real tokens), plus a check that the rest is zero padding."""
    past = cache.past(tensor)
    assert not past[row, :, : cache.length - length, :].any()
    return past[row, :, cache.length - length :, :]


def test_rows_are_left_padded_grown_compacted_and_trimmed() -> None:
    cache = KVCache(SPEC, max_batch=4, max_context=16)
    assert cache.past_names == [
        "past_key_values.0.key",
        "past_key_values.0.value",
        "past_key_values.1.key",
        "past_key_values.1.value",
    ]
    a, b, c = _presents(3, 1), _presents(5, 2), _presents(2, 3)
    assert cache.append_row(a) == 0 and cache.length == 3
    assert cache.append_row(b) == 1 and cache.length == 5  # longer prompt: the batch is re-laid out
    assert cache.append_row(c) == 2 and cache.length == 5  # shorter prompt: padded in place
    for t in range(4):
        np.testing.assert_array_equal(_row(cache, 0, t, 3), a[t][0])
        np.testing.assert_array_equal(_row(cache, 1, t, 5), b[t][0])
        np.testing.assert_array_equal(_row(cache, 2, t, 2), c[t][0])
    cache.keep_rows([0, 2], new_length=3)  # b retires; the two slots no row uses any more are trimmed
    assert (cache.batch, cache.length) == (2, 3)
    for t in range(4):
        np.testing.assert_array_equal(_row(cache, 0, t, 3), a[t][0])
        np.testing.assert_array_equal(_row(cache, 1, t, 2), c[t][0])


def test_a_step_writes_present_to_the_back_buffer_and_swaps() -> None:
    cache = KVCache(SPEC, max_batch=2, max_context=8)
    cache.append_row(_presents(2, 1))
    target = cache.present_target(0)
    assert target.shape == (1, 2, 3, 3)
    assert not np.shares_memory(target, cache.past(0))
    target[...] = 7.0  # what the graph would write
    cache.advance()
    assert cache.length == 3
    np.testing.assert_array_equal(cache.past(0), np.full((1, 2, 3, 3), 7.0))
    assert cache.nbytes_in_use() == 4 * 1 * 2 * (2 * 3 + 1) * 3 * 4
