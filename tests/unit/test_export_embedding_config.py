"""Reading pooling, normalisation and max length from a sentence-transformers folder (no model weights)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from realizar_ort.export.embedding import (
    EmbeddingExportError,
    SentenceTransformersConfig,
    export_embedding,
    read_sentence_transformers_config,
    source_sha256,
)

TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
POOLING = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
NORMALIZE = {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}


def _folder(tmp_path: Path, modules: list[dict], pooling: dict, max_seq_length: object = 256) -> Path:
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 384, **pooling}))
    (tmp_path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    return tmp_path


@pytest.mark.parametrize(
    ("flag", "expected"),
    [("pooling_mode_mean_tokens", "mean"), ("pooling_mode_cls_token", "cls"), ("pooling_mode_lasttoken", "lasttoken")],
)
def test_reads_pooling_mode_normalize_and_length(tmp_path: Path, flag: str, expected: str) -> None:
    folder = _folder(tmp_path, [TRANSFORMER, POOLING, NORMALIZE], {flag: True}, 512)
    assert read_sentence_transformers_config(folder) == SentenceTransformersConfig(expected, True, 512, 384)


def test_without_normalize_module_vectors_are_not_normalised(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [TRANSFORMER, POOLING], {"pooling_mode_mean_tokens": True})
    assert read_sentence_transformers_config(folder).normalize is False


def test_two_pooling_modes_are_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [TRANSFORMER, POOLING], {"pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": True})
    with pytest.raises(EmbeddingExportError, match="exactly one of mean/cls/lasttoken"):
        read_sentence_transformers_config(folder)


def test_unsupported_module_is_refused(tmp_path: Path) -> None:
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    folder = _folder(tmp_path, [TRANSFORMER, POOLING, dense], {"pooling_mode_mean_tokens": True})
    with pytest.raises(EmbeddingExportError, match="models.Dense"):
        read_sentence_transformers_config(folder)


def test_missing_files_and_bad_length_are_named(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingExportError, match="modules.json not found"):
        read_sentence_transformers_config(tmp_path)
    folder = _folder(tmp_path, [TRANSFORMER, POOLING], {"pooling_mode_mean_tokens": True}, "long")
    with pytest.raises(EmbeddingExportError, match="max_seq_length must be a positive integer, got 'long'"):
        read_sentence_transformers_config(folder)


def test_source_checksum_changes_with_any_file(tmp_path: Path) -> None:
    folder = _folder(tmp_path, [TRANSFORMER, POOLING], {"pooling_mode_mean_tokens": True})
    before = source_sha256(folder)
    assert source_sha256(folder) == before
    (folder / "1_Pooling" / "config.json").write_text("{}")
    assert source_sha256(folder) != before


def test_unknown_pypi_source_is_named() -> None:
    with pytest.raises(EmbeddingExportError, match=r"unknown model package 'pypi:no-such-model'"):
        export_embedding("pypi:no-such-model", Path("unused"))
