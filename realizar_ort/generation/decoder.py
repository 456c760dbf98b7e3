"""The forward passes of the decode loop, over whichever KV layout the exported graph has.

Two stages, the same for every graph: `prefill` runs one new sequence's whole prompt alone (so its numbers
never depend on other requests) and returns its last position's logits (`InPlaceDecoder.prefill_batch`
runs several right-padded in one pass, with bitwise the same numbers); `decode_step` runs one token for
every row of the running batch. Between them the scheduler samples, `admit`s prefilled sequences into
the batch and `keep_rows` when rows retire.

Which decoder runs depends on the manifest's ``kv_layout``:
- ``"shared_buffer"`` (the default export: fused GroupQueryAttention graph) -> :class:`InPlaceDecoder`:
  one preallocated KV slot per row, written in place by the graph; rows have their own lengths.
- ``"concat"`` (the Optimum graph, ``--graph optimum``) -> :class:`PaddedDecoder`: ping-pong KV buffers,
  rows left-padded to one length, attention mask + position ids.
Both bind every tensor by pointer (I/O binding), so no KV tensor passes through Python per step.
Threading: a decoder is owned by the scheduler thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import onnxruntime as ort

from ..manifest import LlmSpec
from .decoder_inplace import InPlaceDecoder
from .decoder_padded import PaddedDecoder

__all__ = ["Decoder", "InPlaceDecoder", "PaddedDecoder", "create_decoder"]


class Decoder(Protocol):
    session_run_seconds: float  # cumulative time inside session.run for decode steps
    prefill_seconds: float
    chunked_prefill: bool  # whether prefill_chunk / admit_staged / extend exist (InPlaceDecoder)
    batched_prefill: bool  # whether prefill_batch / admit_prefilled exist (InPlaceDecoder)
    prefix_caching: bool  # whether extend / next_slot / kv (slots) exist for a PrefixCache (InPlaceDecoder)

    def prefill(self, prompt_ids: list[int]) -> np.ndarray:
        """Run one prompt alone; returns its last position's logits ``[V]`` (valid until the next call)."""
        ...

    def admit(self) -> int:
        """The sequence just prefilled becomes the batch's last row; returns its row index."""
        ...

    def decode_step(
        self, next_tokens: np.ndarray, seq_lengths: np.ndarray, before_run: Callable[[], None] | None = None
    ) -> np.ndarray:
        """One token per row (`seq_lengths`: tokens already in each row's KV); logits ``[b, V]``."""
        ...

    def keep_rows(self, rows: Sequence[int], lengths: Sequence[int]) -> None:
        """Keep only `rows` (old indices, new order, ``rows[j] >= j``) holding `lengths` tokens each."""
        ...

    def clear(self) -> None: ...

    def kv_bytes_in_use(self, lengths: Sequence[int]) -> int: ...


def create_decoder(session: ort.InferenceSession, spec: LlmSpec, max_batch: int, max_context: int) -> Decoder:
    if spec.kv_layout == "shared_buffer":
        return InPlaceDecoder(session, spec, max_batch, max_context)
    return PaddedDecoder(session, spec, max_batch, max_context)
