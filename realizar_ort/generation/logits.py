"""The ``LogitProcessor`` hook: how grammars (and anything else) shape a sequence's next-token logits.

The decode loop calls each of a request's processors once per step, in order, before penalties and
sampling (mask first, then penalties, then sample). A processor is created per request and may keep state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["LogitProcessor"]


@runtime_checkable
class LogitProcessor(Protocol):
    def process(self, generated_ids: Sequence[int], logits: np.ndarray) -> None:
        """Shape ``logits`` in place for the next token.

        ``generated_ids``: the tokens this request has generated so far (not the prompt); a stateful
        processor catches up on the ones appended since its last call. ``logits``: float32 ``[vocab]``,
        the model's row for this sequence, writable. Masking sets disallowed entries to ``-inf``.
        Must not raise on model output: a processor that reaches an error state masks everything but the
        stop tokens so the sequence ends.
        """
        ...
