"""ONNX graph surgery and introspection for exported decoders.

The stock Optimum export computes logits for every prompt position (``[batch, seq, vocab]``: with a 128k
vocabulary and a 1,000-token prompt that is 0.5 GB per request). Decoding only ever needs the last
position, so :func:`keep_last_position_logits` slices the hidden states to the last position before the
LM head. Parity with transformers' greedy tokens is checked after the rewrite (see ``verify.py``).
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

__all__ = ["io_specs", "keep_last_position_logits"]


def keep_last_position_logits(model_path: Path, logits_name: str = "logits") -> None:
    """Rewrite ``model_path`` in place so ``logits`` is ``[batch, 1, vocab]``."""
    model = onnx.load(str(model_path))
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    node = producers.get(logits_name)
    # Walk back through element-wise casts to the LM head's MatMul/Gemm.
    while node is not None and node.op_type in ("Cast", "Identity"):
        node = producers.get(node.input[0])
    if node is None or node.op_type not in ("MatMul", "Gemm"):
        raise RuntimeError(f"cannot find the LM head producing '{logits_name}' (found {node and node.op_type})")
    hidden = node.input[0]
    sliced = hidden + "/last_position"
    consts = {"starts": -1, "ends": 2**62, "axes": 1}
    for key, value in consts.items():
        graph.initializer.append(helper.make_tensor(f"{sliced}/{key}", TensorProto.INT64, [1], [value]))
    slice_node = helper.make_node(
        "Slice", [hidden, f"{sliced}/starts", f"{sliced}/ends", f"{sliced}/axes"], [sliced], name=f"{sliced}/Slice"
    )
    node.input[0] = sliced
    index = list(graph.node).index(node)
    graph.node.insert(index, slice_node)
    for output in graph.output:
        if output.name == logits_name:
            dim = output.type.tensor_type.shape.dim[1]
            dim.Clear()
            dim.dim_value = 1
    for info in list(graph.value_info):
        if info.name in (logits_name, hidden):
            graph.value_info.remove(info)
    onnx.save(model, str(model_path))


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def io_specs(model_path: Path) -> tuple[list[dict], list[dict]]:
    """The graph's declared inputs and outputs as manifest ``TensorSpec`` dicts."""
    model = onnx.load(str(model_path), load_external_data=False)

    def spec(v: onnx.ValueInfoProto) -> dict:
        dtype = helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
        return {"name": v.name, "dtype": dtype, "shape": _dims(v)}

    return [spec(v) for v in model.graph.input], [spec(v) for v in model.graph.output]
