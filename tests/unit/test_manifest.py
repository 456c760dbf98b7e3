from __future__ import annotations

import json
from pathlib import Path

import pytest

from realizar_ort.manifest import EmbeddingSpec, LlmSpec, Manifest, ManifestError, TensorSpec, load_manifest


def _llm_manifest(passed: bool = True) -> Manifest:
    return Manifest(
        kind="llm",
        name="m",
        onnx_file="model.onnx",
        tokenizer_file="tokenizer.json",
        inputs=(TensorSpec("input_ids", "int64", ("batch_size", "sequence_length")),),
        outputs=(TensorSpec("logits", "float32", ("batch_size", 1, 32)),),
        dtype="float32",
        special_tokens={"<|eot_id|>": 9},
        source={"kind": "hf", "sha256": "ab"},
        exporter={"torch": "2.13.0"},
        verification={"passed": passed},
        llm=LlmSpec(
            num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, hidden_size=64, vocab_size=32,
            tokenizer_vocab_size=33, context_length=128, eos_token_ids=(9, 8), bos_token_id=1, pad_token_id=0,
            add_bos_token=True, chat_format="llama3",
        ),
        chat_template_file="chat_template.jinja",
    )


def test_round_trip_through_the_file(tmp_path: Path) -> None:
    manifest = _llm_manifest()
    manifest.write(tmp_path)
    loaded = load_manifest(tmp_path)
    assert loaded == manifest
    assert loaded.llm.eos_token_ids == (9, 8)
    assert loaded.inputs[0].shape == ("batch_size", "sequence_length")
    assert loaded.input_names() == ("input_ids",)


def test_embedding_round_trip(tmp_path: Path) -> None:
    manifest = Manifest(
        kind="embedding", name="e", onnx_file="model.onnx", tokenizer_file="tokenizer.json", inputs=(), outputs=(),
        dtype="float32", special_tokens={}, source={}, exporter={}, verification={"passed": True},
        embedding=EmbeddingSpec(pooling="mean", normalize=True, max_seq_length=256, embedding_dim=384),
    )
    manifest.write(tmp_path)
    assert load_manifest(tmp_path).embedding == manifest.embedding


def test_unverified_export_is_refused(tmp_path: Path) -> None:
    _llm_manifest(passed=False).write(tmp_path)
    with pytest.raises(ManifestError, match="parity check did not pass"):
        load_manifest(tmp_path)


def test_missing_and_malformed_manifests(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="export the model first"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        load_manifest(tmp_path)
    data = _llm_manifest().to_dict()
    del data["llm"]["num_layers"]
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="malformed manifest"):
        load_manifest(tmp_path)
    data = _llm_manifest().to_dict()
    data["llm"] = None
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="needs an 'llm' section"):
        load_manifest(tmp_path)


def test_quantization_section_round_trips_and_old_string_form_is_read(tmp_path: Path) -> None:
    import dataclasses

    section = {"method": "gguf", "block_size": 32, "accuracy_level": 0, "layers": {"Q4_1": 14},
               "quality": {"perplexity": 24.2, "perplexity_fp32": 24.2}}
    manifest = dataclasses.replace(_llm_manifest(), quantization=section, dtype="gguf")
    manifest.write(tmp_path)
    assert load_manifest(tmp_path).quantization == section
    data = {**manifest.to_dict(), "quantization": "int8"}  # written before quantization was a section
    assert Manifest.from_dict(data).quantization == {"method": "int8"}
