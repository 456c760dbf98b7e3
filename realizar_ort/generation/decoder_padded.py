"""Decode over a graph that returns ``present = concat(past, new)`` (``kv_layout = "concat"``: the Optimum
export, ``realizar-ort export llm --graph optimum``).

`prefill` runs one new sequence's whole prompt with an empty past and keeps its KV until `admit` appends it
as a row. `decode_step` runs one token for every row of the running batch, reading past KV from and
writing present KV to the preallocated `KVCache` ping-pong buffers through I/O binding, so no KV tensor
passes through Python (the graph's own concat still copies the cache each step).

Batching rule (exact batch invariance in fp32): rows are left-padded to the common length L; the
attention mask hides the padding; each row's position id is its own length (= cumsum(mask) - 1).
Threading: owned by the scheduler thread. Timing counters feed `ModelEngine.stats()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import onnxruntime as ort

from ..manifest import LlmSpec
from .kv_cache import KVCache

__all__ = ["PaddedDecoder"]


class PaddedDecoder:
    chunked_prefill = False  # the concat graph's prefill needs the whole prompt at once
    batched_prefill = False  # prompts are prefilled one at a time
    prefix_caching = False  # no prefix cache on this graph (see generation/prefix_cache.py)

    def __init__(
        self, session: ort.InferenceSession, spec: LlmSpec, max_batch: int, max_context: int
    ) -> None:
        self.session = session
        self.spec = spec
        self.vocab_size = spec.vocab_size
        self.kv = KVCache(spec, max_batch, max_context)
        self._binding = session.io_binding()
        self._input_names = {i.name for i in session.get_inputs()}
        self._has_position_ids = (
            spec.position_ids_name is not None and spec.position_ids_name in self._input_names
        )
        # Step scratch, allocated once: token ids [B, 1], positions [B, 1], mask [B * (C + 1)], logits [B, 1, V].
        self._token_ids = np.zeros((max_batch, 1), np.int64)
        self._positions = np.zeros((max_batch, 1), np.int64)
        self._mask = np.zeros(max_batch * (max_context + 1), np.int64)
        self._slots = np.arange(max_context + 1, dtype=np.int64)
        self._logits = np.zeros((max_batch, 1, spec.vocab_size), np.float32)
        self._empty_past = np.zeros((1, spec.num_kv_heads, 0, spec.head_dim), np.float32)
        self._pending: list[np.ndarray] = []  # presents of the last prefill, until admitted
        self.session_run_seconds = 0.0  # cumulative time inside session.run for decode steps
        self.prefill_seconds = 0.0

    # ---- stage 1: prefill one new sequence ----------------------------------------------------------
    def prefill(self, prompt_ids: list[int]) -> np.ndarray:
        """Run a whole prompt alone. Returns the logits ``[V]`` of its last position; its presents
        (``[1, kv_heads, p, head_dim]`` per KV tensor) wait for `admit`."""
        spec, p = self.spec, len(prompt_ids)
        feed: dict[str, np.ndarray] = {
            spec.input_ids_name: np.asarray([prompt_ids], np.int64),  # [1, p]
            spec.attention_mask_name: np.ones((1, p), np.int64),  # [1, 0 + p]
        }
        if self._has_position_ids:
            feed[spec.position_ids_name] = np.arange(p, dtype=np.int64)[None, :]  # [1, p]
        for name in self.kv.past_names:
            feed[name] = self._empty_past  # [1, kv_heads, 0, head_dim]
        started = time.perf_counter()
        logits, *self._pending = self.session.run([spec.logits_name, *self.kv.present_names], feed)
        self.prefill_seconds += time.perf_counter() - started
        return logits[0, -1]  # [V]

    def admit(self) -> int:
        """Append the last prefilled sequence as the batch's last row (left-padded to the batch length)."""
        row = self.kv.append_row(self._pending)
        self._pending = []
        return row

    # ---- stage 2: one decode step for the whole running batch ----------------------------------------
    def decode_step(
        self, next_tokens: np.ndarray, seq_lengths: np.ndarray, before_run: Callable[[], None] | None = None
    ) -> np.ndarray:
        """Feed each row's last sampled token. `next_tokens`, `seq_lengths`: ``[b]`` (tokens already in
        each row's KV). `before_run` is called just before the graph runs (the scheduler hands out the
        previous step's deltas there, so woken callers use the GIL while the graph holds none).
        Returns logits ``[b, V]`` (a view into scratch, valid until the next step)."""
        kv, spec, binding = self.kv, self.spec, self._binding
        b, length = kv.batch, kv.length  # b rows, past length L (left-padded)
        # 1. inputs: the new token [b, 1] at position = the row's own length [b, 1]
        token_ids = self._token_ids[:b]
        token_ids[:, 0] = next_tokens
        positions = self._positions[:b]
        positions[:, 0] = seq_lengths
        # 2. mask [b, L + 1]: slot j is visible iff j >= padding (L - length) of that row
        mask = self._mask[: b * (length + 1)].reshape(b, length + 1)
        np.greater_equal(
            self._slots[None, : length + 1], (length - seq_lengths)[:, None], out=mask, casting="unsafe"
        )
        # 3. bind inputs, past KV (front buffers) and outputs (back buffers, logits scratch) by pointer
        _bind(binding.bind_input, spec.input_ids_name, token_ids)
        _bind(binding.bind_input, spec.attention_mask_name, mask)
        if self._has_position_ids:
            _bind(binding.bind_input, spec.position_ids_name, positions)
        for t in range(kv.num_tensors):
            _bind(binding.bind_input, kv.past_names[t], kv.past(t))  # [b, kv_heads, L, head_dim]
            _bind(binding.bind_output, kv.present_names[t], kv.present_target(t))  # [b, kv_heads, L+1, hd]
        logits = self._logits[:b]  # [b, 1, V]
        _bind(binding.bind_output, spec.logits_name, logits)
        # 4. run the graph; present becomes next step's past
        if before_run is not None:
            before_run()
        started = time.perf_counter()
        self.session.run_with_iobinding(binding)
        self.session_run_seconds += time.perf_counter() - started
        kv.advance(1)
        return logits[:, 0, :]  # [b, V]

    # ---- batch membership (step boundaries) -----------------------------------------------------------
    def keep_rows(self, rows: Sequence[int], lengths: Sequence[int]) -> None:
        """Keep `rows` and trim the padding no kept row needs any more."""
        self.kv.keep_rows(rows, max(lengths, default=0))

    def clear(self) -> None:
        self.kv.clear()

    def kv_bytes_in_use(self, lengths: Sequence[int]) -> int:
        return self.kv.nbytes_in_use()


def _bind(bind, name: str, array: np.ndarray) -> None:
    bind(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
