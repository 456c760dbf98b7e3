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
Batched prefill: several first prompts in one pass, right-padded (``seqlens_k`` = each one's length - 1),
into consecutive slots; each slot and each prompt's logits are bitwise what a pass alone gives, and the
weights are read once for all of them instead of once per prompt.
Threading: owned by the scheduler thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import onnxruntime as ort

from ..errors import ContextLengthError
from ..manifest import LlmSpec
from .kv_slots import SlotKVCache

__all__ = ["InPlaceDecoder"]


class InPlaceDecoder:
    chunked_prefill = True
    batched_prefill = True
    prefix_caching = True  # extend / next_slot / kv: a PrefixCache can load into and store from the slots

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
        self._prefill_logits = np.zeros((max_batch, 1, spec.vocab_size), np.float32)
        self._batch_first_slot = 0  # slot of row 0 of the last prefill_batch
        self._step_binding = session.io_binding()
        self._bound_batch = -1  # batch size the step binding was made for
        self.session_run_seconds = 0.0
        self.prefill_seconds = 0.0

    # ---- stage 1: prefill new sequences into the next free slots ------------------------------------------
    def prefill(self, prompt_ids: list[int]) -> np.ndarray:
        """The whole prompt in one pass, into slot b (the new row if the scheduler admits it)."""
        return self._run_prompts([prompt_ids], 0, self.kv.batch)[0]

    def prefill_batch(self, prompts: Sequence[list[int]]) -> np.ndarray:
        """Several prompts in one pass, right-padded to the longest, into slots ``b .. b + k - 1``.
        GroupQueryAttention masks each row at its own length, so every slot holds bitwise what `prefill`
        alone writes and the logits ``[k, V]`` are each prompt's own last position's (a view into scratch,
        valid until the next prefill). Then `admit_prefilled(j, length)` for the rows that go on, in
        increasing j. Cost: one pass over the weights for all k, plus k x longest positions of compute."""
        if self.kv.batch + len(prompts) > self.kv.max_batch:
            raise RuntimeError(f"{len(prompts)} prompts do not fit next to {self.kv.batch} running rows")
        self._batch_first_slot = self.kv.batch
        return self._run_prompts(prompts, 0, self.kv.batch)

    def admit_prefilled(self, j: int, length: int) -> int:
        """Row j of the last `prefill_batch` (`length` tokens) joins the batch as its last row; moved down
        when an earlier prompt of the batch was not admitted (one copy of its positions)."""
        return self.kv.admit_from(self._batch_first_slot + j, length)

    def prefill_chunk(self, chunk_ids: list[int], done: int) -> np.ndarray:
        """The prompt's tokens ``[done, done + n)`` into the staging slot, on top of the `done` already there.
        Returns the chunk's last position's logits ``[V]`` (the prompt's, once the last chunk ran)."""
        return self.extend(self.kv.staging_slot, chunk_ids, done)

    def extend(self, slot: int, token_ids: Sequence[int], done: int) -> np.ndarray:
        """Feed several tokens to one sequence in one pass: `token_ids` go to positions ``[done, done + n)``
        of `slot`, on top of the `done` positions already there. Returns the last position's logits ``[V]``
        (a view into scratch, valid until the next prefill). The one mechanism behind "a row's pending
        tokens as a chunk": a long prompt's next chunk (staging slot), the rest of a prompt after a prefix
        cache hit (the next free slot), or tokens a running row must take without sampling (its own slot, in
        a pass of its own: onnxruntime's GroupQueryAttention refuses several tokens on top of a past for more
        than one row, "batch_size must be 1 when sequence_length > 1 and past context is given", so rows
        feeding different token counts, or several rows feeding runs, cannot share a pass)."""
        if not 0 <= slot <= self.kv.max_batch:
            raise ValueError(f"slot {slot} does not exist")
        return self._run_prompts([list(token_ids)], done, slot)[0]

    @property
    def next_slot(self) -> int:
        """The slot the next admitted row takes (a prefill or `extend` there, then `admit`)."""
        return self.kv.batch

    def admit_staged(self, length: int) -> int:
        """The fully prefilled staging slot (`length` tokens) becomes the batch's last row."""
        return self.kv.admit_from(self.kv.staging_slot, length)

    def _run_prompts(self, prompts: Sequence[list[int]], done: int, first_slot: int) -> np.ndarray:
        """Prompts (or one chunk on top of `done` positions) into slots ``first_slot ..``; logits ``[k, V]``."""
        spec, kv, k = self.spec, self.kv, len(prompts)
        width = max(len(p) for p in prompts)
        if done + width > self.max_context:
            raise ContextLengthError(f"the prompt has {done + width} tokens; the context holds {self.max_context}")
        binding = self.session.io_binding()
        ids = np.zeros((k, width), np.int64)  # [k, S], right-padded (padding positions are never attended)
        for row, prompt in enumerate(prompts):
            ids[row, : len(prompt)] = prompt
        seqlens = np.array([done + len(p) - 1 for p in prompts], np.int32)  # [k]: each row's last position
        total = np.array(done + width, np.int32)  # []
        logits = self._prefill_logits[:k]  # [k, 1, V]
        _bind(binding.bind_input, spec.input_ids_name, ids)
        _bind(binding.bind_input, spec.seqlens_k_name, seqlens)
        _bind(binding.bind_input, spec.total_sequence_length_name, total)
        for t in range(kv.num_tensors):
            target = kv.slots(t, first_slot, first_slot + k)  # [k, kv_heads, C, head_dim]: positions written
            _bind(binding.bind_input, kv.past_names[t], target)
            _bind(binding.bind_output, kv.present_names[t], target)
        _bind(binding.bind_output, spec.logits_name, logits)
        started = time.perf_counter()
        self.session.run_with_iobinding(binding)
        self.prefill_seconds += time.perf_counter() - started
        return logits[:, 0]  # [k, V]

    def admit(self) -> int:
        return self.kv.admit()

    # ---- stage 2: one decode step for the whole running batch ----------------------------------------
    def decode_step(
        self, next_tokens: np.ndarray, seq_lengths: np.ndarray, before_run: Callable[[], None] | None = None
    ) -> np.ndarray:
        """Feed each row's last sampled token at position = its length. `before_run` is called just before
        the graph runs. Returns logits ``[b, V]`` (a view into scratch, valid until the next step)."""
        b = self.kv.batch
        longest = int(seq_lengths[0] if b == 1 else seq_lengths.max())
        if longest >= self.max_context:
            raise RuntimeError(f"a row reached the KV cache's {self.max_context} positions (the engine admits none that can)")
        # 1. inputs, written into bound scratch: token [b, 1], seqlens_k [b] = position, total [] = longest + 1
        if b == 1:  # scalar writes: a batch of one pays no array ops per step
            self._token_ids[0, 0] = next_tokens[0]
            self._seqlens[0] = longest
        else:
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
