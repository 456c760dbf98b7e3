"""PrefixCache on a small SlotKVCache (no model): keys, matches, copies, LRU eviction and the memory bound."""

from __future__ import annotations

import numpy as np
import pytest

from realizar_ort.generation.kv_slots import SlotKVCache
from realizar_ort.generation.prefix_cache import PrefixCache
from realizar_ort.manifest import LlmSpec

N = 4  # tokens per block in these tests


def _spec() -> LlmSpec:
    return LlmSpec(
        num_layers=2, num_heads=2, num_kv_heads=1, head_dim=3, hidden_size=6, vocab_size=100,
        tokenizer_vocab_size=100, context_length=64, eos_token_ids=(0,), bos_token_id=None, pad_token_id=None,
        add_bos_token=False, chat_format="chatml", kv_layout="shared_buffer",
    )


def _kv() -> SlotKVCache:
    return SlotKVCache(_spec(), max_batch=3, max_context=64)


def _fill(kv: SlotKVCache, slot: int, tokens: list[int]) -> None:
    """Write a KV that is a function of (tensor, position, token) so copies can be checked exactly."""
    for t in range(kv.num_tensors):
        target = kv.slots(t, slot, slot + 1)[0]  # [heads, C, hd]
        for p, token in enumerate(tokens):
            target[:, p, :] = 1000 * t + token + p / 100


def _cache(kv: SlotKVCache, blocks: int, identity: bytes = b"model-a") -> PrefixCache:
    block_bytes = kv.num_tensors * kv.kv_heads * N * kv.head_dim * 4
    return PrefixCache(kv, blocks * block_bytes, identity, block_tokens=N)


def test_store_then_load_gives_the_same_kv_and_caps_at_the_limit() -> None:
    kv = _kv()
    cache = _cache(kv, blocks=16)
    tokens = list(range(10, 23))  # 13 tokens: 3 full blocks
    _fill(kv, 0, tokens)
    assert cache.store(tokens, len(tokens), kv, 0) == 3
    assert cache.store(tokens, len(tokens), kv, 0) == 0  # kept already: nothing copied
    keys = cache.keys(tokens + [99])
    match = cache.match(keys, limit=13)
    assert match.tokens == 12 and len(match.blocks) == 3
    assert cache.match(cache.keys(tokens[:12]), limit=11).tokens == 11  # a prompt keeps its last token to prefill
    cache.load(match, kv, 2)
    for t in range(kv.num_tensors):
        assert np.array_equal(kv.slots(t, 2, 3)[0, :, :12], kv.slots(t, 0, 1)[0, :, :12])


def test_keys_are_a_chain_over_token_ids_and_identity() -> None:
    kv = _kv()
    a, b = _cache(kv, 4, b"model-a"), _cache(kv, 4, b"model-b")
    tokens = list(range(12))
    assert a.keys(tokens) == a.keys(tokens) and len(a.keys(tokens)) == 3
    assert a.keys(tokens) != b.keys(tokens)  # another model or graph never shares blocks
    other = [99, *tokens[1:]]  # the first block differs, so every later key differs too
    assert all(x != y for x, y in zip(a.keys(tokens), a.keys(other)))
    assert a.keys(tokens + [1, 2, 3, 4], known=a.keys(tokens)) == a.keys(tokens + [1, 2, 3, 4])


def test_a_prefix_shorter_than_one_block_is_no_hit() -> None:
    kv = _kv()
    cache = _cache(kv, 8)
    tokens = list(range(20, 28))
    _fill(kv, 0, tokens)
    cache.store(tokens, 8, kv, 0)
    assert cache.match(cache.keys(tokens[:3] + [1, 2, 3, 4, 5]), limit=7).tokens == 0
    assert cache.peek(cache.keys(tokens[:N] + [7, 7, 7, 7]), limit=7) == N


def test_lru_evicts_leaves_first_and_stays_within_its_bound() -> None:
    kv = _kv()
    cache = _cache(kv, blocks=5)
    shared = list(range(1, 9))  # 2 blocks
    first, second = shared + [50, 51, 52, 53], shared + [60, 61, 62, 63]
    for tokens in (first, second):
        _fill(kv, 0, tokens)
        cache.store(tokens, len(tokens), kv, 0)
    assert cache.bytes_in_use == 4 * cache.block_bytes  # shared blocks are kept once
    cache.match(cache.keys(first), limit=12)  # first is used again: second's leaf is now the oldest
    third = [70 + i for i in range(8)]
    _fill(kv, 0, third)
    cache.store(third, 8, kv, 0)  # 2 new blocks, one free: evicts one leaf (second's tail), never a parent
    assert cache.evicted_blocks == 1 and cache.bytes_in_use == 5 * cache.block_bytes <= cache.capacity_bytes
    assert cache.peek(cache.keys(first), limit=12) == 12
    assert cache.peek(cache.keys(second), limit=12) == 8  # only its own tail went
    assert cache.peek(cache.keys(third), limit=8) == 8


def test_a_prefix_longer_than_the_cache_keeps_its_first_blocks() -> None:
    kv = _kv()
    cache = _cache(kv, blocks=3)
    tokens = list(range(30, 50))  # 5 blocks
    _fill(kv, 0, tokens)
    assert cache.store(tokens, 20, kv, 0) == 3
    assert cache.peek(cache.keys(tokens), limit=20) == 12 and cache.evicted_blocks == 0


def test_a_zero_sized_cache_keeps_nothing() -> None:
    kv = _kv()
    cache = PrefixCache(kv, 10, b"m", block_tokens=N)  # smaller than one block
    tokens = list(range(8))
    _fill(kv, 0, tokens)
    assert cache.num_blocks == 0 and cache.store(tokens, 8, kv, 0) == 0
    assert cache.match(cache.keys(tokens), limit=7).tokens == 0


def test_block_tokens_must_be_positive() -> None:
    with pytest.raises(ValueError, match="block_tokens"):
        PrefixCache(_kv(), 1 << 20, b"m", block_tokens=0)
