"""Third-party messages that an export prints and that we have checked are false alarms, silenced where
they arise. Each filter says why it is safe; anything not listed here still reaches the user.

- transformers 4.57 "tokenizer ... with an incorrect regex pattern ... fix_mistral_regex": the check is
  meant for Mistral tokenizers and misfires on any local folder saved by transformers <= 4.57.2, such as
  the Llama 3.2 tokenizer (its pre-tokenizer regex is Meta's own). Applying the "fix" would *change* Llama 3
  tokenization; the exported tokenizer.json is copied unchanged, and greedy parity is checked after export.
- transformers "You are using the default legacy behaviour of LlamaTokenizerFast": informational; the
  message itself says a tokenizer loaded from a GGUF file can ignore it.
- transformers "`torch_dtype` is deprecated! Use `dtype` instead!": raised inside libraries we pin
  (Optimum, sentence-transformers) that still pass the old name; our own calls use ``dtype``.
- torch TracerWarning ("Converting a tensor to a Python boolean ...", "torch.tensor results are registered
  as constants"): emitted while tracing the Optimum graphs at fixed shapes; every export then checks
  onnxruntime's greedy tokens (embedders: cosine) against transformers on inputs of other lengths, which
  fails the export if a traced constant were wrong.
- torch "Exporting aten::index ... If indices include negative values": our graphs index with non-negative
  positions only; the same parity check covers it.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

_FALSE_ALARM_LOGS = (
    "with an incorrect regex pattern",
    "You are using the default legacy behaviour of",
    "`torch_dtype` is deprecated",
)


class _DropFalseAlarms(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in _FALSE_ALARM_LOGS)


@contextlib.contextmanager
def false_alarms_silenced() -> Iterator[None]:
    """Silence the checked false alarms above while the block runs (other warnings pass through)."""
    drop = _DropFalseAlarms()
    loggers = [logging.getLogger(name) for name in (
        "transformers.tokenization_utils_base",
        "transformers.models.llama.tokenization_llama_fast",
        "transformers.models.llama.tokenization_llama",
        "transformers.configuration_utils",
    )]
    for logger in loggers:
        logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            try:
                from torch.jit import TracerWarning
            except ImportError:  # pragma: no cover - torch is part of the export extra
                pass
            else:
                warnings.filterwarnings("ignore", category=TracerWarning)
            warnings.filterwarnings("ignore", message=r"Exporting aten::index operator of advanced indexing")
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(drop)
