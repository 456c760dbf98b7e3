"""`realizar-ort embed` on the real MiniLM: every input format round-trips, bad rows are reported, an
interrupted job resumes without losing or duplicating rows. (The Ray Data job: tests/integration/test_ray.py.)"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from realizar_ort.config import EmbeddingModelConfig, SessionConfig
from realizar_ort.embeddings import batch as batch_embed
from realizar_ort.embeddings.batch import BatchJobError, JobSpec, run_local_job
from realizar_ort.embeddings.engine import EmbeddingEngine

TEXTS = [
    "The cat sat on the mat.", "", "Zürich, São Paulo, 東京 and 🚀", 'quotes "inside", commas, too',
    "a much longer sentence " * 30, "tabs\tand  spaces", "short", "Ελληνικά και русский",
] * 5  # 40 rows


@pytest.fixture(scope="module")
def engine(minilm_dir: Path):
    config = EmbeddingModelConfig(path=minilm_dir, session=SessionConfig(intra_op_threads=2))
    with EmbeddingEngine.from_folder(minilm_dir, config) as eng:
        yield eng


def _spec(tmp_path: Path, path: Path, fmt: str, **kw: object) -> JobSpec:
    base = {"input": path, "output": tmp_path / "out", "format": fmt, "text_field": "text", "id_field": None,
            "on_bad_row": "skip", "batch_size": 8, "chunk_rows": 16}
    return JobSpec(**{**base, **kw})  # type: ignore[arg-type]


def _read_output(folder: Path) -> tuple[list, np.ndarray]:
    table = pads.dataset(folder, format="parquet").to_table().sort_by("id")
    assert pa.types.is_fixed_size_list(table.schema.field("vector").type)
    assert table.schema.field("vector").type.list_size == 384
    vectors = table.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, 384)
    return table.column("id").to_pylist(), vectors


def _write_input(tmp_path: Path, fmt: str, rows: list[str]) -> Path:
    path = tmp_path / f"input.{ {'jsonl': 'jsonl', 'csv': 'csv', 'parquet': 'parquet', 'text': 'txt'}[fmt] }"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "n": i}, ensure_ascii=False) + "\n" for i, t in enumerate(rows)), encoding="utf-8")
    elif fmt == "csv":
        with path.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["n", "text"])
            writer.writerows([i, t] for i, t in enumerate(rows))
    elif fmt == "parquet":
        pq.write_table(pa.table({"n": list(range(len(rows))), "text": rows}), path, row_group_size=7)
    else:
        path.write_text("".join(t + "\n" for t in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet", "text"])
def test_round_trip_each_format(tmp_path: Path, engine: EmbeddingEngine, fmt: str) -> None:
    rows = [t.replace("\t", " ") for t in TEXTS] if fmt == "text" else TEXTS
    summary = run_local_job(_spec(tmp_path, _write_input(tmp_path, fmt, rows), fmt), engine, progress_bar=False)
    assert (summary.rows_read, summary.rows_embedded, summary.bad_rows, summary.parts) == (40, 40, 0, 3)
    assert summary.tokens == sum(engine.count_tokens(rows))
    ids, vectors = _read_output(tmp_path / "out")
    assert ids == list(range(40))
    np.testing.assert_allclose(vectors, engine.embed_numpy(rows), atol=1e-5)


def test_id_field_is_written_as_string(tmp_path: Path, engine: EmbeddingEngine) -> None:
    path = _write_input(tmp_path, "jsonl", TEXTS[:10])
    run_local_job(_spec(tmp_path, path, "jsonl", id_field="n"), engine, progress_bar=False)
    ids, _ = _read_output(tmp_path / "out")
    assert sorted(ids, key=int) == [str(i) for i in range(10)]


def _bad_input(tmp_path: Path) -> Path:
    lines = ['{"text": "fine 0"}', '{"text": 5}', "not json", "", '{"body": "no text"}', '{"text": "fine 5"}',
             '{"text": null}', '{"text": "fine 7"}']
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_bad_rows_are_skipped_and_listed(tmp_path: Path, engine: EmbeddingEngine) -> None:
    summary = run_local_job(_spec(tmp_path, _bad_input(tmp_path), "jsonl", chunk_rows=3), engine, progress_bar=False)
    assert (summary.rows_read, summary.rows_embedded, summary.bad_rows) == (8, 3, 5)
    ids, _ = _read_output(tmp_path / "out")
    assert ids == [0, 5, 7]
    listed = [json.loads(line) for f in sorted((tmp_path / "out" / "_bad_rows").glob("*.jsonl")) for line in f.read_text().splitlines()]
    assert [b["row"] for b in listed] == [1, 2, 3, 4, 6]
    assert [b["reason"].split(":")[0] for b in listed] == [
        "field 'text' is int, expected a string", "invalid JSON", "blank line", "missing field 'text'",
        "field 'text' is null, expected a string"]


def test_bad_row_fails_the_job_when_asked(tmp_path: Path, engine: EmbeddingEngine) -> None:
    with pytest.raises(BatchJobError, match=r"row 1 of .*bad.jsonl: field 'text' is int, expected a string \(pass --on-bad-row skip"):
        run_local_job(_spec(tmp_path, _bad_input(tmp_path), "jsonl", on_bad_row="fail"), engine, progress_bar=False)


def test_parquet_schema_errors_name_the_column(tmp_path: Path, engine: EmbeddingEngine) -> None:
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), path)
    with pytest.raises(BatchJobError, match="column 'text' has type int64, expected a string column"):
        run_local_job(_spec(tmp_path, path, "parquet"), engine, progress_bar=False)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    batch_embed.add_arguments(parser)
    return batch_embed.run(parser.parse_args(argv))


def test_cli_summary_and_refusal_of_a_different_job(tmp_path: Path, minilm_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = _write_input(tmp_path, "jsonl", TEXTS[:12])
    args = ["--input", str(first), "--output", str(tmp_path / "out"), "--model", str(minilm_dir), "--no-progress"]
    assert _cli(args) == 0
    assert "done: 12 rows embedded, 0 bad rows" in capsys.readouterr().err
    assert _cli(args) == 0  # rerun of a finished job: nothing to do
    assert "already complete" in capsys.readouterr().err
    other = tmp_path / "other.jsonl"
    other.write_text('{"text": "x"}\n')
    assert _cli(["--input", str(other)] + args[2:]) == 1
    assert "holds a different job (input, input_mtime_ns, input_size changed); pass --overwrite" in capsys.readouterr().err
    assert _cli(["--input", str(other)] + args[2:] + ["--overwrite"]) == 0
    assert _read_output(tmp_path / "out")[0] == [0]


def test_local_engine_refuses_a_directory_or_glob(tmp_path: Path, minilm_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_input(tmp_path, "text", TEXTS[:2])
    for pattern in (tmp_path, tmp_path / "*.txt"):
        assert _cli(["--input", str(pattern), "--output", str(tmp_path / "out"), "--model", str(minilm_dir)]) == 1
        assert "is a directory or a glob: the local engine reads one file; use --engine ray" in capsys.readouterr().err


def test_a_stragglers_temporary_part_is_hidden_from_readers_and_removed_by_a_rerun(tmp_path: Path, minilm_dir: Path) -> None:
    """A writer of a killed run (a Ray actor the kill has not reached yet) may still hold a temporary part while
    the rerun reads or lists the folder: readers of the output must never count its rows."""
    from realizar_ort.embeddings.job import _temporary, part_name

    path = _write_input(tmp_path, "jsonl", TEXTS[:12])
    out = tmp_path / "out"
    args = ["--input", str(path), "--output", str(out), "--model", str(minilm_dir), "--chunk-rows", "4", "--no-progress"]
    assert _cli(args) == 0
    ids, vectors = _read_output(out)
    straggler = _temporary(out / part_name(1))
    pq.write_table(pq.read_table(out / part_name(1)), straggler)  # half-written copy of a committed part
    assert _read_output(out)[0] == ids == list(range(12))  # a dataset reader skips it
    assert _cli(args) == 0  # the rerun finds the job complete and clears what writers left behind
    assert not straggler.exists() and sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "_progress.json", "part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    again_ids, again = _read_output(out)
    assert again_ids == ids
    np.testing.assert_allclose(again, vectors, atol=1e-6)


@pytest.mark.slow
def test_resume_after_kill_loses_and_duplicates_nothing(tmp_path: Path, minilm_dir: Path, engine: EmbeddingEngine) -> None:
    rows = [f"row {i}: {TEXTS[i % len(TEXTS)][:60]}" for i in range(3000)]
    path = _write_input(tmp_path, "jsonl", rows)
    out = tmp_path / "out"
    args = ["--input", str(path), "--output", str(out), "--model", str(minilm_dir), "--chunk-rows", "100",
            "--batch-size", "16", "--no-progress"]
    script = ("import argparse, sys; from realizar_ort.embeddings import batch as b; p = argparse.ArgumentParser(); "
              "b.add_arguments(p); sys.exit(b.run(p.parse_args(sys.argv[1:])))")
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    progress = out / "_progress.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if progress.is_file() and json.loads(progress.read_text())["parts_done"] >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = json.loads(progress.read_text())
    assert not state["summary"]["complete"] and 3 <= state["parts_done"] < 30
    # As if the kill had landed between a part's rename and the progress update: a stray, uncommitted part.
    pq.write_table(pa.table({"id": [999999], "vector": pa.FixedSizeListArray.from_arrays(pa.array([0.0] * 384, pa.float32()), 384)}),
                   out / f"part-{state['parts_done']:05d}.parquet")

    assert _cli(args) == 0
    ids, vectors = _read_output(out)
    assert ids == list(range(3000))  # every row exactly once
    final = json.loads(progress.read_text())["summary"]
    assert final["resumed_from_row"] == state["parts_done"] * 100 and final["rows_embedded"] == 3000
    np.testing.assert_allclose(vectors, engine.embed_numpy(rows), atol=1e-5)
