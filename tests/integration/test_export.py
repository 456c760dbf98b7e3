"""The exported LLM folders: special tokens, last-position logits, parity with transformers, idempotence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from realizar_ort.export.verify import ort_greedy
from tokenizers import Tokenizer

from realizar_ort.manifest import load_manifest
from realizar_ort.onnx_session import create_session

LLMS = ["smollm2_dir", "tiny_llama3_dir", "tiny_llama3_optimum_dir"]
TURN_END = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}


@pytest.mark.parametrize("fixture", LLMS)
def test_special_tokens_are_right(fixture: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(fixture)
    manifest = load_manifest(folder)
    spec = manifest.llm
    tok = Tokenizer.from_file(str(folder / manifest.tokenizer_file))
    # The turn-end token of the format is the first eos, and every eos id decodes to a special token.
    assert spec.eos_token_ids[0] == tok.token_to_id(TURN_END[spec.chat_format])
    for eos in spec.eos_token_ids:
        assert tok.id_to_token(eos) in manifest.special_tokens
    if spec.chat_format == "llama3":
        assert {tok.token_to_id(t) for t in ("<|eot_id|>", "<|eom_id|>")} <= set(spec.eos_token_ids)
        assert spec.bos_token_id == tok.token_to_id("<|begin_of_text|>")
        assert tok.encode("Hi").ids[0] == spec.bos_token_id and spec.add_bos_token
    else:
        # SmolLM2's GGUF conversion says eos <|im_start|> and prepends it to every encode: both fixed.
        assert tok.token_to_id("<|im_start|>") not in spec.eos_token_ids
        assert tok.encode("Hi").ids == tok.encode("Hi", add_special_tokens=False).ids
        assert not spec.add_bos_token
    assert spec.pad_token_id is not None and spec.pad_token_id < spec.tokenizer_vocab_size
    assert spec.vocab_size <= spec.tokenizer_vocab_size
    assert (folder / manifest.chat_template_file).read_text().strip()


def test_llama3_model_vocab_is_smaller_than_the_tokenizer(tiny_llama3_dir: Path) -> None:
    spec = load_manifest(tiny_llama3_dir).llm
    assert (spec.vocab_size, spec.tokenizer_vocab_size) == (128256, 128257)


@pytest.mark.parametrize("fixture", LLMS)
def test_last_position_logits_keep_transformers_greedy_tokens(fixture: str, request: pytest.FixtureRequest) -> None:
    folder: Path = request.getfixturevalue(fixture)
    manifest = load_manifest(folder)
    logits = next(o for o in manifest.outputs if o.name == manifest.llm.logits_name)
    assert logits.shape[1] == 1 and logits.shape[2] == manifest.llm.vocab_size
    golden = json.loads((folder / "golden.json").read_text())
    assert max(len(r["prompt_ids"]) for r in golden["prompts"]) > 500  # one long prompt
    session = create_session(folder / manifest.onnx_file)
    fields = ("num_layers", "num_kv_heads", "head_dim", "vocab_size", "eos_token_ids", "kv_layout")
    spec = {f: getattr(manifest.llm, f) for f in fields}
    for record in golden["prompts"]:
        assert ort_greedy(session, spec, record["prompt_ids"], golden["max_new_tokens"]) == record["greedy_ids"]


@pytest.mark.slow
def test_export_is_idempotent_and_cached(tmp_path: Path) -> None:
    env = {**os.environ, "REALIZAR_CACHE_DIR": str(tmp_path / "cache")}
    cli = [sys.executable, "-m", "realizar_ort", "export", "llm", "--source", "builtin:tiny-llama3"]

    def export(out: Path, *extra: str) -> str:
        proc = subprocess.run([*cli, "--out", str(out), *extra], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stderr

    first = tmp_path / "a"
    log = export(first)
    assert "parity" in log and load_manifest(first).verification["passed"]
    stamp = (first / "model.onnx").stat().st_mtime_ns
    log = export(first)
    assert "up to date (existing export matches)" in log and "fused onnx graph" not in log
    assert (first / "model.onnx").stat().st_mtime_ns == stamp
    second = tmp_path / "b"
    log = export(second)
    assert "restored from cache" in log and "fused onnx graph" not in log
    files = sorted(p.name for p in first.glob("model.onnx*"))
    assert files == sorted(p.name for p in second.glob("model.onnx*"))
    for name in files:
        assert (second / name).read_bytes() == (first / name).read_bytes()
    log = export(second, "--force")
    assert "fused onnx graph" in log and "parity" in log


def test_default_graph_is_fused_and_writes_kv_in_place(tiny_llama3_dir: Path, tiny_llama3_optimum_dir: Path) -> None:
    import onnx

    fused = load_manifest(tiny_llama3_dir)
    assert fused.llm.kv_layout == "shared_buffer" and fused.verification["graph"] == "fused"
    assert {"seqlens_k", "total_sequence_length"} <= set(fused.input_names())
    assert "attention_mask" not in fused.input_names()
    ops = [n.op_type for n in onnx.load(str(tiny_llama3_dir / "model.onnx"), load_external_data=False).graph.node]
    assert ops.count("GroupQueryAttention") == fused.llm.num_layers
    past = next(t for t in fused.inputs if t.name == "past_key_values.0.key")
    present = next(t for t in fused.outputs if t.name == "present.0.key")
    assert past.shape == present.shape  # one buffer serves as both
    optimum = load_manifest(tiny_llama3_optimum_dir)
    assert optimum.llm.kv_layout == "concat" and optimum.verification["graph"] == "optimum"


def test_optimize_graph_needs_the_optimum_graph(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "realizar_ort", "export", "llm", "--source", "builtin:tiny-llama3", "--out",
         str(tmp_path / "o"), "--optimize-graph"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2 and "--graph optimum" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_source_is_a_clear_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "realizar_ort", "export", "llm", "--source", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2 and "error: export source" in proc.stderr and "Traceback" not in proc.stderr

