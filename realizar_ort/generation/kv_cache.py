"""The running batch's KV cache: preallocated ping-pong buffers bound straight to the graph's I/O.

The exported graph returns ``present = concat(past, new)`` for every layer's key and value. Each of those
tensors gets two flat float32 buffers sized for ``max_batch x kv_heads x max_context x head_dim`` up front;
a decode step reads ``past`` from the front buffer and onnxruntime writes ``present`` straight into the
back buffer (I/O binding by pointer), then the two swap. Nothing is allocated or copied through Python per
step; the only per-step copy is the graph's own concat.

Layout: row r of the batch is one sequence, left-padded so every row has the same padded length L
(``[b, kv_heads, L, head_dim]``, contiguous). Padding slots are zero (finite), and the attention mask
hides them. Admitting a sequence writes one new row (O(row), or a re-layout of the batch when its prompt
is longer than L); retiring sequences compacts the rows and trims padding every row shares.

Memory: reserved virtually up front (``2 x layers x 2 x max_batch x kv_heads x max_context x head_dim x 4``
bytes); pages become resident as the cache grows, so resident memory follows the longest batch seen.
Threading: owned by the scheduler thread.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..manifest import LlmSpec

__all__ = ["KVCache"]


class KVCache:
    def __init__(self, spec: LlmSpec, max_batch: int, max_context: int) -> None:
        self.max_batch = max_batch
        self.max_context = max_context
        self.kv_heads = spec.num_kv_heads
        self.head_dim = spec.head_dim
        self.past_names, self.present_names = spec.kv_io_names()
        capacity = max_batch * self.kv_heads * max_context * self.head_dim
        # [side][tensor] flat float32; np.empty maps pages lazily, so untouched capacity costs no RAM.
        self._buffers = [[np.empty(capacity, np.float32) for _ in self.past_names] for _ in range(2)]
        self._front = 0
        self.batch = 0  # b: rows in use
        self.length = 0  # L: padded past length shared by all rows

    @property
    def num_tensors(self) -> int:
        return len(self.past_names)

    def _view(self, side: int, tensor: int, batch: int, length: int) -> np.ndarray:
        size = batch * self.kv_heads * length * self.head_dim
        return self._buffers[side][tensor][:size].reshape(batch, self.kv_heads, length, self.head_dim)

    def past(self, tensor: int) -> np.ndarray:
        """The front buffer as the graph's past input: ``[b, kv_heads, L, head_dim]``."""
        return self._view(self._front, tensor, self.batch, self.length)

    def present_target(self, tensor: int, new_tokens: int = 1) -> np.ndarray:
        """Where the graph writes present: the back buffer as ``[b, kv_heads, L + new_tokens, head_dim]``."""
        return self._view(1 - self._front, tensor, self.batch, self.length + new_tokens)

    def advance(self, new_tokens: int = 1) -> None:
        """After a step: the back buffer (present) becomes the front (next past)."""
        self._front = 1 - self._front
        self.length += new_tokens

    def nbytes_in_use(self) -> int:
        """Bytes of past + present for the current batch (what a step touches)."""
        per_tensor = self.batch * self.kv_heads * (2 * self.length + 1) * self.head_dim * 4
        return per_tensor * self.num_tensors

    # ---- admitting and retiring rows (step boundaries only) ---------------------------------------------
    def append_row(self, presents: Sequence[np.ndarray]) -> int:
        """Add one prefilled sequence (``presents[t]``: ``[1, kv_heads, p, head_dim]``) as the last row.

        If p <= L the row is written left-padded in place; otherwise the batch is re-laid out at length p
        first (one copy of the cache). Returns the row index.
        """
        if self.batch >= self.max_batch:
            raise RuntimeError("KV cache is full: the scheduler admitted more rows than max_batch")
        p = presents[0].shape[2]
        if p > self.max_context:
            raise RuntimeError(f"sequence of {p} tokens exceeds the cache's max_context {self.max_context}")
        if p > self.length:
            self._relayout(list(range(self.batch)), p)
        row = self.batch
        self.batch += 1
        pad = self.length - p
        for t, present in enumerate(presents):
            past = self.past(t)
            past[row, :, :pad, :] = 0.0
            past[row, :, pad:, :] = present[0]
        return row

    def keep_rows(self, rows: Sequence[int], new_length: int) -> None:
        """Keep only `rows` (in this order) and trim the padded length to `new_length` (<= L): the leading
        ``L - new_length`` slots must be padding in every kept row."""
        if list(rows) == list(range(self.batch)) and new_length == self.length:
            return
        self._relayout(list(rows), new_length)

    def _relayout(self, rows: list[int], new_length: int) -> None:
        """Copy `rows` into the back buffer at padded length `new_length` (left-aligned padding), then swap."""
        old_length, back = self.length, 1 - self._front
        for t in range(self.num_tensors):
            src = self.past(t)  # [b, kv, L, hd]
            dst = self._view(back, t, len(rows), new_length)  # [b', kv, L', hd]
            for new_row, old_row in enumerate(rows):
                if new_length >= old_length:
                    dst[new_row, :, : new_length - old_length, :] = 0.0
                    dst[new_row, :, new_length - old_length :, :] = src[old_row]
                else:
                    dst[new_row] = src[old_row, :, old_length - new_length :, :]
        self._front = back
        self.batch = len(rows)
        self.length = new_length

    def clear(self) -> None:
        self.batch = 0
        self.length = 0
