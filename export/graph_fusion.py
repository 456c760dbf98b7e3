"""Opt-in offline graph fusion for an exported Llama-family decoder (``--optimize-graph``).

Runs onnxruntime's own transformer fusion tool (``onnxruntime.transformers.optimizer.optimize_model``)
over the Optimum export with ``model_type="gpt2"`` and ``opt_level=0`` (python pattern fusions only; the
runtime still applies its own optimisations when the session is created). On SmolLM2 / Llama exports
from transformers 4.57 this fuses 60 SkipSimplifiedLayerNormalization (residual add + RMSNorm) and one
RotaryEmbedding per query/key projection; attention itself is NOT fused (the GQA pattern does not match
onnxruntime's rotary-attention fusion), so the KV cache is still returned as a grown copy per step.

Graph I/O names and shapes are unchanged, so the manifest written for the stock export stays valid.
Cost: one pass over the graph in Python, ~45 s and ~2 GB of memory for a 135M-parameter fp32 model.
"""

from __future__ import annotations

from pathlib import Path

import onnx

__all__ = ["FUSION_MODEL_TYPE", "GraphFusionError", "fuse_llm_graph"]

FUSION_MODEL_TYPE = "gpt2"  # onnxruntime's decoder fusions (RMSNorm, skip-RMSNorm, rotary embedding)
_MAX_SINGLE_FILE_BYTES = 2**31 - 1  # protobuf limit; larger graphs keep their weights in external data


class GraphFusionError(RuntimeError):
    """The fusion tool changed the graph's inputs/outputs or fused nothing."""


def _io_signature(model: onnx.ModelProto) -> list[tuple[str, ...]]:
    return [tuple(v.name for v in model.graph.input), tuple(v.name for v in model.graph.output)]


def fuse_llm_graph(model_path: Path, *, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Fuse ``model_path`` in place; returns the count of each fused operator that was created.

    Raises GraphFusionError, leaving the file untouched, when no fusion applied or the graph's
    input/output names would change. Run the greedy parity check after this, on the fused file.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    model_path = Path(model_path)
    before = onnx.load(str(model_path), load_external_data=False)
    signature = _io_signature(before)
    del before
    fused = optimize_model(
        str(model_path), model_type=FUSION_MODEL_TYPE, num_heads=num_heads, hidden_size=hidden_size,
        opt_level=0, use_gpu=False,
    )
    counts = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
    if _io_signature(fused.model) != signature:
        raise GraphFusionError(f"graph fusion changed the model's inputs/outputs for {model_path}")
    if not counts:
        raise GraphFusionError(f"graph fusion matched no pattern in {model_path}; export without --optimize-graph")
    external = fused.model.ByteSize() > _MAX_SINGLE_FILE_BYTES
    fused.save_model_to_file(str(model_path), use_external_data_format=external)
    return counts
