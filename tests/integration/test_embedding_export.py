"""The embedding exporter: what it writes, its parity record, and idempotence (a real Optimum export)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from realizar_ort.export.embedding import DEFAULT_SOURCE, PARITY_CORPUS, export_embedding, source_sha256

from realizar_ort.manifest import load_manifest


def test_exported_tokenizer_truncates_at_256_and_never_pads(minilm_dir: Path) -> None:
    data = json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert data["truncation"]["max_length"] == 256
    assert data["padding"] is None  # the packaged file pads to 128: that trap must not ship


def test_manifest_records_source_graph_and_parity(minilm_dir: Path) -> None:
    manifest = load_manifest(minilm_dir)
    assert manifest.kind == "embedding" and manifest.onnx_file == "model.onnx"
    assert manifest.output_names() == ("last_hidden_state",)
    assert set(manifest.input_names()) == {"input_ids", "attention_mask", "token_type_ids"}
    assert manifest.special_tokens["cls_token"] == 101 and manifest.special_tokens["pad_token"] == 0
    assert manifest.verification["min_cosine"] >= 0.9999 and manifest.verification["corpus_size"] == len(PARITY_CORPUS)
    assert manifest.verification["max_tokens_in_corpus"] == 256
    assert {"torch", "optimum", "onnxruntime", "sentence-transformers"} <= set(manifest.exporter)
    reference = np.load(minilm_dir / "reference.npz", allow_pickle=False)
    assert list(reference["texts"]) == list(PARITY_CORPUS) and reference["vectors"].shape == (len(PARITY_CORPUS), 384)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::Warning")  # torch's tracer and transformers' deprecations during export
def test_export_verifies_then_skips_when_source_unchanged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "minilm"
    manifest = export_embedding(DEFAULT_SOURCE, out)
    assert manifest.verification["passed"] is True
    assert manifest.source["sha256"] == source_sha256(DEFAULT_SOURCE)
    assert {p.name for p in out.iterdir()} == {"manifest.json", "model.onnx", "tokenizer.json", "reference.npz"}
    stamp = (out / "model.onnx").stat().st_mtime_ns
    capsys.readouterr()

    again = export_embedding(DEFAULT_SOURCE, out)
    assert "up to date" in capsys.readouterr().err
    assert again == manifest and (out / "model.onnx").stat().st_mtime_ns == stamp

    tampered = json.loads((out / "manifest.json").read_text())
    tampered["source"]["sha256"] = "0" * 64  # as if the source had changed: must re-export
    (out / "manifest.json").write_text(json.dumps(tampered))
    export_embedding(DEFAULT_SOURCE, out)
    assert "exporting to ONNX" in capsys.readouterr().err
    assert load_manifest(out).source["sha256"] == manifest.source["sha256"]
