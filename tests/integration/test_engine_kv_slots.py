"""SlotKVCache bookkeeping (no model): fixed slots per row, admission, and retirement by moving rows into holes."""

from __future__ import annotations

import numpy as np
import pytest

from realizar_ort.generation.kv_slots import SlotKVCache
from realizar_ort.manifest import LlmSpec

SPEC = LlmSpec(
    num_layers=2, num_heads=4, num_kv_heads=2, head_dim=3, hidden_size=12, vocab_size=10, tokenizer_vocab_size=10,
    context_length=64, eos_token_ids=(0,), bos_token_id=None, pad_token_id=None, add_bos_token=False,
    chat_format="chatml", kv_layout="shared_buffer", attention_mask_name=None, position_ids_name=None,
    seqlens_k_name="seqlens_k", total_sequence_length_name="total_sequence_length",
)


def _fill(cache: SlotKVCache, slot: int, length: int, tag: float) -> None:
    """What the graph's prefill writes: positions [0, length) of the slot, in every tensor."""
    for t in range(cache.num_tensors):
        cache.slots(t, slot, slot + 1)[0, :, :length, :] = tag * 100 + t * 10 + np.arange(length)[None, :, None]


def _expect(cache: SlotKVCache, row: int, length: int, tag: float) -> None:
    for t in range(cache.num_tensors):
        want = np.broadcast_to(tag * 100 + t * 10 + np.arange(length, dtype=np.float32)[None, :, None], (2, length, 3))
        np.testing.assert_array_equal(cache.slots(t, row, row + 1)[0, :, :length, :], want)


def test_rows_are_slots_and_retiring_moves_the_last_rows_into_the_holes() -> None:
    cache = SlotKVCache(SPEC, max_batch=4, max_context=16)
    assert cache.past_names == ["past_key_values.0.key", "past_key_values.0.value",
                                "past_key_values.1.key", "past_key_values.1.value"]
    assert cache.present_names[0] == "present.0.key"
    for slot, (length, tag) in enumerate([(3, 1), (5, 2), (2, 3), (7, 4)]):
        _fill(cache, cache.batch, length, tag)  # prefill writes into the next free slot ...
        assert cache.admit() == slot  # ... which then joins the batch
    view = cache.slots(0, 0, cache.batch)
    assert view.shape == (4, 2, 16, 3) and view.flags.c_contiguous  # bound as past and present at once
    # rows 1 and 2 retire: row 3 moves into hole 1, row 0 stays (the order the scheduler produces)
    cache.keep_rows([0, 3], [3, 7])
    assert cache.batch == 2
    _expect(cache, 0, 3, 1)
    _expect(cache, 1, 7, 4)
    assert cache.nbytes_in_use([3, 7]) == 10 * 4 * 2 * 3 * 4


def test_rows_cannot_move_up_and_a_full_cache_refuses_admission() -> None:
    cache = SlotKVCache(SPEC, max_batch=2, max_context=8)
    cache.admit()
    cache.admit()
    with pytest.raises(RuntimeError, match="max_batch"):
        cache.admit()
    with pytest.raises(ValueError, match="cannot move up"):
        cache.keep_rows([1, 0], [1, 1])
    cache.clear()
    assert cache.batch == 0
