"""Opt-in graph fusion of the Optimum graph (--graph optimum --optimize-graph): fused ops appear, I/O is
unchanged, greedy tokens are unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from realizar_ort.export.graph_fusion import GraphFusionError, fuse_llm_graph
from realizar_ort.export.verify import ort_greedy

from realizar_ort.manifest import load_manifest
from realizar_ort.onnx_session import create_session


def _io_names(path: Path) -> tuple[list[str], list[str]]:
    model = onnx.load(str(path), load_external_data=False)
    return [v.name for v in model.graph.input], [v.name for v in model.graph.output]


def test_fused_tiny_llama3_keeps_golden_greedy_tokens(tiny_llama3_optimum_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "tiny-llama3"
    shutil.copytree(tiny_llama3_optimum_dir, folder)
    manifest = load_manifest(folder)
    spec = manifest.llm
    model_path = folder / manifest.onnx_file
    io_before = _io_names(model_path)
    nodes_before = len(onnx.load(str(model_path), load_external_data=False).graph.node)

    counts = fuse_llm_graph(model_path, num_heads=spec.num_heads, hidden_size=spec.hidden_size)

    # One rotary embedding per query and key projection, one skip-RMSNorm per residual add.
    assert counts.get("RotaryEmbedding") == 2 * spec.num_layers
    assert counts.get("SkipSimplifiedLayerNormalization") == 2 * spec.num_layers
    fused = onnx.load(str(model_path), load_external_data=False)
    assert {n.op_type for n in fused.graph.node} >= {"RotaryEmbedding", "SkipSimplifiedLayerNormalization"}
    assert len(fused.graph.node) < nodes_before
    assert _io_names(model_path) == io_before

    session = create_session(model_path)
    greedy_spec = {
        "num_layers": spec.num_layers, "num_kv_heads": spec.num_kv_heads, "head_dim": spec.head_dim,
        "vocab_size": spec.vocab_size, "eos_token_ids": list(spec.eos_token_ids),
    }
    golden = json.loads((folder / "golden.json").read_text())
    assert golden["prompts"]
    for prompt in golden["prompts"]:
        got = ort_greedy(session, greedy_spec, prompt["prompt_ids"], golden["max_new_tokens"])
        assert got == prompt["greedy_ids"], prompt["prompt_text"][:60]


def test_graph_with_nothing_to_fuse_is_refused_and_left_untouched(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    before = path.read_bytes()
    with pytest.raises(GraphFusionError, match="matched no pattern"):
        fuse_llm_graph(path, num_heads=4, hidden_size=64)
    assert path.read_bytes() == before


@pytest.mark.slow
def test_export_cli_optimize_graph_keeps_parity(tmp_path: Path) -> None:
    """`realizar-ort export llm --optimize-graph` fuses, re-checks parity, and records what it fused."""
    import os
    import subprocess
    import sys

    from realizar_ort.manifest import load_manifest

    out = tmp_path / "fused"
    proc = subprocess.run(
        [sys.executable, "-m", "realizar_ort", "export", "llm", "--source", "builtin:tiny-llama3", "--out", str(out),
         "--graph", "optimum", "--optimize-graph"],
        env={**os.environ, "REALIZAR_CACHE_DIR": str(tmp_path / "cache")}, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "graph fusion" in proc.stderr
    verification = load_manifest(out).verification
    assert verification["passed"] and not verification["mismatches"]
    assert verification["graph_fusion"].get("RotaryEmbedding", 0) > 0
