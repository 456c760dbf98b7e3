"""Decode over a fused graph that writes the KV cache in place (``kv_layout = "shared_buffer"``).

The graph (``export/llama_graph.py``) runs GroupQueryAttention with past and present bound to the same
`SlotKVCache` slots: a step reads each row's positions ``[0, length)`` and writes position ``length``;
nothing is concatenated or copied. Each row carries its own length, so there is no padding, no attention
mask and no position ids: the graph takes ``seqlens_k = length`` (the new token's position) and
``total_sequence_length = max(length) + 1``, and rotary positions follow from them.

Per step, Python only writes b token ids, b lengths and one scalar into preallocated scratch that is
already bound by pointer; the bindings are redone only when the batch size changes.

Chunked prefill: GroupQueryAttention also runs a prompt piece by piece on top of its own past
(``seqlens_k = done + n - 1``), with the same tokens as one pass, so the scheduler can feed a long prompt
a chunk per step boundary (`prefill_chunk`, into the staging slot) without stalling the running rows.
Threading: owned by the scheduler thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import onnxruntime as ort

from .errors import ContextLengthError
from .kv_slots import SlotKVCache
from .manifest import LlmSpec

__all__ = ["InPlaceDecoder"]


class InPlaceDecoder:
    chunked_prefill = True

    def __init__(self, session: ort.InferenceSession, spec: LlmSpec, max_batch: int, max_context: int) -> None:
        if spec.seqlens_k_name is None or spec.total_sequence_length_name is None:
            raise ValueError("a shared_buffer graph needs seqlens_k and total_sequence_length inputs in its manifest")
        self.session = session
        self.spec = spec
        self.max_context = max_context
        self.kv = SlotKVCache(spec, max_batch, max_context)
        # Scratch, allocated once and bound by pointer: token ids [B, 1], seqlens_k [B], total [], logits [B, 1, V].
        self._token_ids = np.zeros((max_batch, 1), np.int64)
        self._seqlens = np.zeros(max_batch, np.int32)
        self._total = np.zeros((), np.int32)
        self._logits = np.zeros((max_batch, 1, spec.vocab_size), np.float32)
        self._prefill_logits = np.zeros((1, 1, spec.vocab_size), np.float32)
        self._step_binding = session.io_binding()
        self._bound_batch = -1  # batch size the step binding was made for
        self.session_run_seconds = 0.0
        self.prefill_seconds = 0.0

    # ---- stage 1: prefill one new sequence into the next free slot ---------------------------------------
    def prefill(self, prompt_ids: list[int]) -> np.ndarray:
        """The whole prompt in one pass, into slot b (the new row if the scheduler admits it)."""
        return self._run_prompt(prompt_ids, 0, self.kv.batch)

    def prefill_chunk(self, chunk_ids: list[int], done: int) -> np.ndarray:
        """The prompt's tokens ``[done, done + n)`` into the staging slot, on top of the `done` already there.
        Returns the chunk's last position's logits ``[V]`` (the prompt's, once the last chunk ran)."""
        return self._run_prompt(chunk_ids, done, self.kv.staging_slot)

    def admit_staged(self, length: int) -> int:
        """The fully prefilled staging slot (`length` tokens) becomes the batch's last row."""
        return self.kv.admit_staged(length)

    def _run_prompt(self, ids_list: list[int], done: int, slot: int) -> np.ndarray:
        spec, kv, n = self.spec, self.kv, len(ids_list)
        if done + n > self.max_context:
            raise ContextLengthError(f"the prompt has {done + n} tokens; the context holds {self.max_context}")
        binding = self.session.io_binding()
        ids = np.asarray([ids_list], np.int64)  # [1, n]
        seqlens = np.array([done + n - 1], np.int32)  # [1]
        total = np.array(done + n, np.int32)  # []
        _bind(binding.bind_input, spec.input_ids_name, ids)
        _bind(binding.bind_input, spec.seqlens_k_name, seqlens)
        _bind(binding.bind_input, spec.total_sequence_length_name, total)
        for t in range(kv.num_tensors):
            target = kv.slots(t, slot, slot + 1)  # [1, kv_heads, C, head_dim]: positions done..done+n-1 written
            _bind(binding.bind_input, kv.past_names[t], target)
            _bind(binding.bind_output, kv.present_names[t], target)
        _bind(binding.bind_output, spec.logits_name, self._prefill_logits)
        started = time.perf_counter()
        self.session.run_with_iobinding(binding)
        self.prefill_seconds += time.perf_counter() - started
        return self._prefill_logits[0, 0]  # [V]

    def admit(self) -> int:
        return self.kv.admit()

    # ---- stage 2: one decode step for the whole running batch ----------------------------------------
    def decode_step(
        self, next_tokens: np.ndarray, seq_lengths: np.ndarray, before_run: Callable[[], None] | None = None
    ) -> np.ndarray:
        """Feed each row's last sampled token at position = its length. `before_run` is called just before
        the graph runs. Returns logits ``[b, V]`` (a view into scratch, valid until the next step)."""
        b = self.kv.batch
        longest = int(seq_lengths.max())
        if longest >= self.max_context:
            raise RuntimeError(f"a row reached the KV cache's {self.max_context} positions (the engine admits none that can)")
        # 1. inputs, written into bound scratch: token [b, 1], seqlens_k [b] = position, total [] = longest + 1
        self._token_ids[:b, 0] = next_tokens
        self._seqlens[:b] = seq_lengths
        self._total[()] = longest + 1
        # 2. (re)bind only when the batch size changed; KV slots [b, kv_heads, C, head_dim] are past and present
        if self._bound_batch != b:
            self._bind_step(b)
        # 3. run: each row's new K/V lands at its own position in its slot
        if before_run is not None:
            before_run()
        started = time.perf_counter()
        self.session.run_with_iobinding(self._step_binding)
        self.session_run_seconds += time.perf_counter() - started
        return self._logits[:b, 0, :]  # [b, V]

    def _bind_step(self, b: int) -> None:
        spec, kv, binding = self.spec, self.kv, self._step_binding
        _bind(binding.bind_input, spec.input_ids_name, self._token_ids[:b])
        _bind(binding.bind_input, spec.seqlens_k_name, self._seqlens[:b])
        _bind(binding.bind_input, spec.total_sequence_length_name, self._total)
        for t in range(kv.num_tensors):
            slots = kv.slots(t, 0, b)
            _bind(binding.bind_input, kv.past_names[t], slots)
            _bind(binding.bind_output, kv.present_names[t], slots)
        _bind(binding.bind_output, spec.logits_name, self._logits[:b])
        self._bound_batch = b

    # ---- batch membership (step boundaries) -----------------------------------------------------------
    def keep_rows(self, rows: Sequence[int], lengths: Sequence[int]) -> None:
        self.kv.keep_rows(rows, lengths)

    def clear(self) -> None:
        self.kv.clear()

    def kv_bytes_in_use(self, lengths: Sequence[int]) -> int:
        return self.kv.nbytes_in_use(lengths)


def _bind(bind, name: str, array: np.ndarray) -> None:
    bind(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
