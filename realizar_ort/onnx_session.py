"""The one place that creates onnxruntime sessions.

Providers, thread counts and graph optimisation come from :class:`~realizar_ort.config.SessionConfig`.
A requested provider that this onnxruntime build lacks is dropped with a warning that lists what is
available, so a silent fall-back to the CPU is never silent. On the CPU the weights a session loads are
moved onto huge pages (``SessionConfig.huge_pages``, default on; see :mod:`realizar_ort.huge_pages`).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnxruntime as ort

from .config import SessionConfig
from .huge_pages import new_memory_on_huge_pages

__all__ = ["ProviderFallbackWarning", "available_providers", "create_session"]

log = logging.getLogger(__name__)

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


class ProviderFallbackWarning(RuntimeWarning):
    """A requested execution provider is not available in this onnxruntime build."""


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def create_session(model_path: str | Path, config: SessionConfig | None = None) -> ort.InferenceSession:
    """Build an ``InferenceSession`` for ``model_path`` as ``config`` says."""
    config = config or SessionConfig()
    available = available_providers()
    providers = [p for p in config.providers if p in available]
    missing = [p for p in config.providers if p not in available]
    if missing:
        warnings.warn(
            f"execution provider(s) {missing} requested but not available in this onnxruntime build "
            f"(available: {available}); falling back to {providers or ['CPUExecutionProvider']}",
            ProviderFallbackWarning,
            stacklevel=2,
        )
    if not providers:
        providers = ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.graph_optimization_level = _OPT_LEVELS[config.graph_optimization]
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = config.inter_op_threads
    options.log_severity_level = 3
    with new_memory_on_huge_pages(config.huge_pages and providers[0] == "CPUExecutionProvider"):
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    log.info("loaded %s on %s", Path(model_path).name, session.get_providers()[0])
    return session
