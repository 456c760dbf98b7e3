"""Prefix cache: KV of prompts (and answers) already computed, kept in host RAM for later requests.

An agent sends the same long prefix every turn (system prompt + tool schemas + the conversation so far).
Its KV is the same every time, so a request whose prompt starts with tokens seen before copies their KV
into its slot and prefills only the rest.

Layout (as vLLM's automatic prefix caching): the token sequence is cut into blocks of `block_tokens`;
block i is keyed by a hash chain ``key_i = blake2b(key_{i-1} + tokens of block i)`` whose root is the
model/graph identity, so a key names the whole prefix up to the end of its block, never text. Only full
blocks are kept. Each block holds every KV tensor's positions of that block in a pool allocated once
(``[num_blocks, kv_heads, block_tokens, head_dim]`` per tensor, ``np.empty``: pages become resident as
blocks are written), so memory never exceeds ``capacity_bytes``.

Eviction is LRU over blocks. A lookup or store touches a chain from its last block back to its first, so
a block is never older than its descendants: the least recently used block is always a leaf, and
evicting it never strands a longer prefix. A store never evicts its own chain (a prefix longer than the
whole cache is kept as far as it fits).

Copies: `load` copies a match into a slot of a `SlotKVCache` (one copy per block and tensor: ~46 KB per
position for SmolLM2, a few ms for 1,000 tokens); `store` copies the blocks not yet kept out of a slot.
Threading: owned by the scheduler thread (stats() reads counters that are plain ints).
"""

from __future__ import annotations

import collections
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .kv_slots import SlotKVCache

__all__ = ["BLOCK_TOKENS", "PrefixCache", "PrefixMatch"]

BLOCK_TOKENS = 16  # positions per block: a hit is a multiple of this (capped at the prompt's length - 1)
_DIGEST = 16


@dataclass(frozen=True)
class PrefixMatch:
    blocks: tuple[int, ...]  # pool indices of the matched blocks, in order
    tokens: int  # positions to take from them (<= len(blocks) * block_tokens)


class PrefixCache:
    def __init__(
        self,
        kv: SlotKVCache,
        capacity_bytes: int,
        identity: bytes,
        block_tokens: int = BLOCK_TOKENS,
    ) -> None:
        if block_tokens <= 0:
            raise ValueError(f"block_tokens must be > 0, got {block_tokens}")
        self.block_tokens = block_tokens
        heads, head_dim = kv.kv_heads, kv.head_dim
        self.block_bytes = kv.num_tensors * heads * block_tokens * head_dim * 4
        self.num_blocks = capacity_bytes // self.block_bytes
        self.capacity_bytes = self.num_blocks * self.block_bytes
        shape = (self.num_blocks, heads, block_tokens, head_dim)
        self._pool = [np.empty(shape, np.float32) for _ in range(kv.num_tensors)]  # lazily resident
        self._root = hashlib.blake2b(identity, digest_size=_DIGEST).digest()
        self._blocks: collections.OrderedDict[bytes, int] = collections.OrderedDict()  # key -> pool index, LRU first
        self._free = list(range(self.num_blocks - 1, -1, -1))
        self.queries = 0  # lookups (one per admitted prompt)
        self.query_tokens = 0  # prompt tokens looked up
        self.hit_tokens = 0  # of those, positions loaded from the cache
        self.evicted_blocks = 0

    # ---- keys ----------------------------------------------------------------------------------------
    def keys(self, tokens: Sequence[int], known: Sequence[bytes] = ()) -> list[bytes]:
        """The chain keys of every full block of `tokens`; `known` are keys of its first blocks already
        computed (a prompt's, when the answer is stored), so only the rest is hashed."""
        n, n_blocks = self.block_tokens, len(tokens) // self.block_tokens
        keys = list(known[:n_blocks])
        if len(keys) == n_blocks:
            return keys
        ids = np.asarray(tokens[len(keys) * n : n_blocks * n], np.int64)
        parent = keys[-1] if keys else self._root
        for i in range(n_blocks - len(keys)):
            parent = hashlib.blake2b(parent + ids[i * n : (i + 1) * n].tobytes(), digest_size=_DIGEST).digest()
            keys.append(parent)
        return keys

    # ---- lookups ---------------------------------------------------------------------------------------
    def match(self, keys: Sequence[bytes], limit: int) -> PrefixMatch:
        """The longest cached prefix among the chain `keys`, capped at `limit` positions (a prompt keeps at
        least its last token to prefill, for its logits). Touches the matched blocks."""
        blocks: list[int] = []
        for key in keys[: -(-limit // self.block_tokens)] if limit > 0 else ():
            index = self._blocks.get(key)
            if index is None:
                break
            blocks.append(index)
        for key in reversed(keys[: len(blocks)]):  # the first block ends up most recent
            self._blocks.move_to_end(key)
        return PrefixMatch(tuple(blocks), min(len(blocks) * self.block_tokens, limit))

    def peek(self, keys: Sequence[bytes], limit: int) -> int:
        """How many positions `match` would give now (touches nothing)."""
        usable = keys[: -(-limit // self.block_tokens)] if limit > 0 else ()
        found = next((i for i, key in enumerate(usable) if key not in self._blocks), len(usable))
        return min(found * self.block_tokens, limit)

    def record(self, prompt_tokens: int, hit_tokens: int) -> None:
        """Count one lookup (one admitted prompt) for stats() and metrics."""
        self.queries += 1
        self.query_tokens += prompt_tokens
        self.hit_tokens += hit_tokens

    def load(self, match: PrefixMatch, kv: SlotKVCache, slot: int) -> None:
        """Copy a match's positions ``[0, match.tokens)`` into `slot`."""
        n = self.block_tokens
        for t, pool in enumerate(self._pool):
            target = kv.slots(t, slot, slot + 1)[0]  # [kv_heads, C, head_dim]
            for i, index in enumerate(match.blocks):
                stop = min(n, match.tokens - i * n)
                if stop <= 0:
                    break
                target[:, i * n : i * n + stop, :] = pool[index, :, :stop, :]

    # ---- stores ----------------------------------------------------------------------------------------
    def store(
        self, tokens: Sequence[int], length: int, kv: SlotKVCache, slot: int, known: Sequence[bytes] = ()
    ) -> int:
        """Keep the full blocks of ``tokens[:length]`` whose KV is in `slot` positions ``[0, length)``
        (`known`: keys of its first blocks, as `keys` takes); copies only blocks not kept yet. Returns the
        number of blocks copied."""
        if not self.num_blocks:
            return 0
        keys = self.keys(tokens[:length], known)
        chain = set(keys)
        for key in reversed(keys):  # touch what is kept first, so eviction looks past this chain
            if key in self._blocks:
                self._blocks.move_to_end(key)
        copied = 0
        n = self.block_tokens
        for i, key in enumerate(keys):
            if key in self._blocks:
                continue
            index = self._allocate(chain)
            if index is None:  # the cache holds nothing but this chain: keep what fits
                keys = keys[:i]
                break
            for t, pool in enumerate(self._pool):
                pool[index] = kv.slots(t, slot, slot + 1)[0, :, i * n : (i + 1) * n, :]
            self._blocks[key] = index
            copied += 1
        for key in reversed(keys):  # parents more recent than children: eviction takes leaves first
            if key in self._blocks:
                self._blocks.move_to_end(key)
        return copied

    def _allocate(self, keep: set[bytes]) -> int | None:
        if self._free:
            return self._free.pop()
        victim = next(iter(self._blocks), None)
        if victim is None or victim in keep:
            return None
        self.evicted_blocks += 1
        return self._blocks.pop(victim)

    def clear(self) -> None:
        self._blocks.clear()
        self._free = list(range(self.num_blocks - 1, -1, -1))

    # ---- reporting -------------------------------------------------------------------------------------
    @property
    def bytes_in_use(self) -> int:
        return len(self._blocks) * self.block_bytes

    def stats(self) -> dict[str, int]:
        return {
            "prefix_cache_queries": self.queries,
            "prefix_cache_query_tokens": self.query_tokens,
            "prefix_cache_hit_tokens": self.hit_tokens,
            "prefix_cache_blocks": len(self._blocks),
            "prefix_cache_evicted_blocks": self.evicted_blocks,
            "prefix_cache_bytes_in_use": self.bytes_in_use,
            "prefix_cache_capacity_bytes": self.capacity_bytes,
        }
