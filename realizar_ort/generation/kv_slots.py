"""The running batch's KV cache for a graph that writes it in place: one fixed slot per row.

For ``kv_layout = "shared_buffer"`` graphs (GroupQueryAttention with past and present bound to the same
memory). Each key/value tensor of each layer is one float32 buffer ``[max_batch, kv_heads, max_context,
head_dim]``; row r of the running batch owns slot r and keeps its tokens at positions ``[0, length_r)``.
Rows need no padding and nothing moves when a row grows: the graph writes each new position where it
belongs. Rows of the batch are the first b slots, so the graph sees a contiguous ``[b, ...]`` view.

Admitting a sequence prefills straight into slot b. A long prompt prefilled in chunks across several steps
(while rows come and go) builds up in a separate staging slot and is copied into slot b when complete.
Retiring rows moves the last rows into the holes they leave (one copy of each moved row's used positions;
the scheduler orders rows to match).

Memory: ``layers x 2 x (max_batch + 1) x kv_heads x max_context x head_dim x 4`` bytes reserved up front with
``np.zeros`` (pages are mapped lazily, so resident memory follows the positions actually written); half
of what the concat layout's ping-pong buffers reserve. Threading: owned by the scheduler thread.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..manifest import LlmSpec

__all__ = ["SlotKVCache"]


class SlotKVCache:
    def __init__(self, spec: LlmSpec, max_batch: int, max_context: int) -> None:
        self.max_batch = max_batch
        self.max_context = max_context
        self.past_names, self.present_names = spec.kv_io_names()
        self.kv_heads, self.head_dim = spec.num_kv_heads, spec.head_dim
        shape = (max_batch + 1, spec.num_kv_heads, max_context, spec.head_dim)  # + the staging slot
        self._buffers = [np.zeros(shape, np.float32) for _ in self.past_names]
        self.bytes_per_position = len(self._buffers) * spec.num_kv_heads * spec.head_dim * 4
        self.batch = 0  # b: slots in use (rows 0 .. b-1)
        self.staging_slot = max_batch  # where a chunked prefill builds up

    @property
    def num_tensors(self) -> int:
        return len(self._buffers)

    def slots(self, tensor: int, start: int, stop: int) -> np.ndarray:
        """Slots ``[start, stop)`` of one tensor: ``[stop - start, kv_heads, max_context, head_dim]``,
        contiguous, bound as both past and present."""
        return self._buffers[tensor][start:stop]

    def admit(self) -> int:
        """Slot b (just prefilled) joins the batch; returns its row index."""
        if self.batch >= self.max_batch:
            raise RuntimeError("KV cache is full: the scheduler admitted more rows than max_batch")
        self.batch += 1
        return self.batch - 1

    def admit_from(self, slot: int, length: int) -> int:
        """Slot `slot` (prefilled, `length` positions) joins the batch as row b: copied into slot b first
        unless it is slot b already (the staging slot; a batch-prefilled prompt after one that was not
        admitted). Returns its row index."""
        if self.batch >= self.max_batch:
            raise RuntimeError("KV cache is full: the scheduler admitted more rows than max_batch")
        if slot < self.batch:
            raise ValueError(f"slot {slot} belongs to a running row")
        if slot != self.batch:
            for buffer in self._buffers:
                buffer[self.batch, :, :length, :] = buffer[slot, :, :length, :]
        return self.admit()

    def keep_rows(self, rows: Sequence[int], lengths: Sequence[int]) -> None:
        """Keep only `rows` (old indices, in their new order) whose used lengths are `lengths`.

        Each new row j takes old row ``rows[j]``; ``rows[j] >= j`` must hold (keep order, or move rows from
        the end into holes), so copying in increasing j never overwrites a row still to be moved."""
        for new_row, (old_row, length) in enumerate(zip(rows, lengths)):
            if old_row < new_row:
                raise ValueError(f"row {old_row} cannot move up to {new_row}")
            if old_row != new_row:
                for buffer in self._buffers:
                    buffer[new_row, :, :length, :] = buffer[old_row, :, :length, :]
        self.batch = len(rows)

    def nbytes_in_use(self, lengths: Sequence[int]) -> int:
        """Bytes of KV the batch's rows hold (what a step reads)."""
        return int(sum(lengths)) * self.bytes_per_position

    def clear(self) -> None:
        self.batch = 0
