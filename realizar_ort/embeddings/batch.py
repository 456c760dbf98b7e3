"""``realizar-ort embed``: embed a JSONL, CSV, Parquet or plain-text file into a Parquet dataset.

The input is read as a stream (memory stays bounded by ``--chunk-rows``, whatever the file's size) and cut
into numbered chunks of input rows. Chunk ``k`` becomes ``OUT/part-0000k.parquet`` (columns ``id`` and
``vector``, a fixed-size list of float32), written to a temporary name and renamed; only then does
``OUT/_progress.json`` (also replaced atomically) count it as done. A rerun after an interruption checks that
the job is the same (input size and mtime, fields, model), deletes parts beyond the committed count and
continues from the first uncommitted row, so no row is lost or written twice.

Bad rows (invalid JSON, a missing text field, a value that is not text, a null) are never dropped silently:
with ``--on-bad-row skip`` they are listed in ``OUT/_bad_rows/part-0000k.jsonl`` (row number, id, reason)
and counted in the summary; with ``--on-bad-row fail`` the job stops at the first one and names it. Row
numbers count every input record (0-based), and are the default ``id``.

``--engine ray`` runs the same job on Ray Data (see :mod:`realizar_ort.embeddings.ray_job`). pyarrow and tqdm
are imported when the job runs (the ``batch`` extra), never by the runtime.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..config import ConfigError, EmbeddingModelConfig, load_config
from .engine import EmbeddingEngine
from .job import (
    BAD_ROWS_DIR,
    BatchJobError,
    JobSpec,
    JobSummary,
    Record,
    atomic_write,
    bad_rows_jsonl,
    bad_rows_name,
    embed_chunk,
    remove_temporaries,
    write_part,
)
from .records import FORMATS, count_records, input_files, read_records

__all__ = ["add_arguments", "run", "run_local_job"]

PROGRESS_FILE = "_progress.json"


# ---- writing -----------------------------------------------------------------------------------------


def _fingerprint(spec: JobSpec, engine: EmbeddingEngine) -> dict[str, Any]:
    stat = spec.input.stat()
    return {
        "input": str(spec.input.resolve()), "input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns,
        "format": spec.format, "text_field": spec.text_field, "id_field": spec.id_field,
        "chunk_rows": spec.chunk_rows, "model": engine.manifest.name,
        "model_sha256": engine.manifest.source.get("sha256"),
    }


def _prepare_output(spec: JobSpec, job: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """Return the committed progress (fresh or resumed) after removing anything uncommitted."""
    out = spec.output
    progress_path = out / PROGRESS_FILE
    if out.exists() and not out.is_dir():
        raise BatchJobError(f"--output {out} exists and is not a directory")
    progress: dict[str, Any] = {"job": job, "parts_done": 0, "summary": asdict(JobSummary())}
    if progress_path.is_file() and not overwrite:
        saved = json.loads(progress_path.read_text(encoding="utf-8"))
        if saved.get("job") != job:
            changed = sorted(k for k in job if saved.get("job", {}).get(k) != job[k])
            raise BatchJobError(
                f"{out} holds a different job ({', '.join(changed)} changed); pass --overwrite to start over "
                f"or choose another --output"
            )
        progress = saved
    elif out.is_dir() and any(out.iterdir()) and not overwrite and not progress_path.is_file():
        raise BatchJobError(f"{out} is not empty and holds no {PROGRESS_FILE}; pass --overwrite or another --output")
    out.mkdir(parents=True, exist_ok=True)
    (out / BAD_ROWS_DIR).mkdir(exist_ok=True)
    done = progress["parts_done"]
    remove_temporaries(out, out / BAD_ROWS_DIR)
    for path in list(out.glob("part-*.parquet")) + list((out / BAD_ROWS_DIR).glob("part-*.jsonl")):
        stem = path.name.split(".")[0]
        if int(stem.split("-")[1]) >= done or overwrite:
            path.unlink()
    if overwrite:
        progress_path.unlink(missing_ok=True)
    return progress


# ---- the local job -------------------------------------------------------------------------------------


def run_local_job(spec: JobSpec, engine: EmbeddingEngine, *, overwrite: bool = False, progress_bar: bool = True) -> JobSummary:
    """Run (or resume) the job on this machine; see the module doc. Raises :class:`BatchJobError`."""
    started = time.perf_counter()
    job = _fingerprint(spec, engine)
    progress = _prepare_output(spec, job, overwrite)
    summary = JobSummary(**progress["summary"])
    if summary.complete:
        _say(f"{spec.output} is already complete; nothing to do")
        return summary
    skip_rows = progress["parts_done"] * spec.chunk_rows
    summary.resumed_from_row = skip_rows
    if skip_rows:
        _say(f"resuming {spec.output} at row {skip_rows} ({progress['parts_done']} parts committed)")
    total = count_records(spec.input, spec.format)
    bar = _progress_bar(total, skip_rows, progress_bar)
    chunk: list[Record] = []
    part = progress["parts_done"]
    try:
        for record in read_records(spec.input, spec.format, spec.text_field, spec.id_field):
            if record.row < skip_rows:
                continue
            if record.error is not None and spec.on_bad_row == "fail":
                raise BatchJobError(f"row {record.row} of {spec.input}: {record.error} (pass --on-bad-row skip to skip bad rows)")
            chunk.append(record)
            if len(chunk) == spec.chunk_rows:
                _commit(spec, engine, chunk, part, summary, progress)
                bar.update(len(chunk))
                part, chunk = part + 1, []
        if chunk:
            _commit(spec, engine, chunk, part, summary, progress)
            bar.update(len(chunk))
    finally:
        bar.close()
    summary.complete = True
    summary.seconds += time.perf_counter() - started
    progress["summary"] = asdict(summary)
    atomic_write(spec.output / PROGRESS_FILE, json.dumps(progress, indent=2).encode())
    return summary


def _commit(spec: JobSpec, engine: EmbeddingEngine, chunk: list[Record], part: int, summary: JobSummary,
            progress: dict[str, Any]) -> None:
    good, bad, vectors, tokens = embed_chunk(engine, chunk, spec.batch_size)
    if bad and spec.on_bad_row == "fail":
        raise BatchJobError(f"row {bad[0].row} of {spec.input}: {bad[0].error} (pass --on-bad-row skip to skip bad rows)")
    ids = [r.id if spec.id_field else r.row for r in good]
    write_part(spec.output, part, ids, vectors, engine.dimension, spec.id_field is not None)
    if bad:
        atomic_write(spec.output / BAD_ROWS_DIR / bad_rows_name(part), bad_rows_jsonl(bad))
    summary.rows_read += len(chunk)
    summary.rows_embedded += len(good)
    summary.bad_rows += len(bad)
    summary.tokens += tokens
    summary.parts = part + 1
    progress["parts_done"] = part + 1
    progress["summary"] = asdict(summary)
    atomic_write(spec.output / PROGRESS_FILE, json.dumps(progress, indent=2).encode())


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(total: int, initial: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="row", file=sys.stderr, smoothing=0.1,
                desc="embedding")


def _say(message: str) -> None:
    print(f"[embed] {message}", file=sys.stderr, flush=True)


# ---- CLI hooks (the lead's `realizar-ort embed` calls these) --------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", type=Path, required=True,
                        help="JSONL, CSV, Parquet or text file (one text per line); --engine ray also takes a "
                             "directory or a quoted glob (ids then '<file>:<row>')")
    parser.add_argument("--output", type=Path, required=True,
                        help="output folder: a Parquet dataset of part files (id, vector) plus _progress.json")
    parser.add_argument("--format", choices=FORMATS, help="input format (default: from the file suffix)")
    parser.add_argument("--text-field", default="text", help="field/column holding the text (default: text)")
    parser.add_argument("--id-field", help="field/column holding the row id (default: the 0-based row number)")
    parser.add_argument("--on-bad-row", choices=("skip", "fail"), default="skip",
                        help="skip bad rows (listed in OUT/_bad_rows/) or stop at the first (default: skip)")
    parser.add_argument("--engine", choices=("local", "ray"), default="local",
                        help="local: this process; ray: Ray Data actors (needs the ray extra); both resumable")
    parser.add_argument("--batch-size", type=int, help="texts per model run (default: the config's batch_size)")
    parser.add_argument("--chunk-rows", type=int, default=4096, help="input rows per committed part file")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model", type=Path, help="exported embedding model folder")
    model.add_argument("--config", type=Path, help="config.toml whose [models.embedding] to use (default: ./config.toml)")
    parser.add_argument("--overwrite", action="store_true", help="discard an existing output folder's parts and start over")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--concurrency", type=int, default=2, help="ray: number of embedding actors")
    parser.add_argument("--ray-address", help="ray: cluster address (default: start a local Ray)")


def _model_config(args: argparse.Namespace) -> EmbeddingModelConfig:
    if args.model is not None:
        return EmbeddingModelConfig(path=args.model)
    config_path = args.config or Path("config.toml")
    config = load_config(config_path)
    if config.embedding is None:
        raise BatchJobError(f"{config_path} has no [models.embedding] section; pass --model DIR")
    return config.embedding


def job_spec(args: argparse.Namespace, model_config: EmbeddingModelConfig) -> JobSpec:
    base, files, fmt = input_files(args.input, args.format)
    if files and args.engine != "ray":
        raise BatchJobError(f"--input {args.input} is a directory or a glob: the local engine reads one file; "
                            f"use --engine ray for several")
    if fmt == "text" and args.id_field:
        raise BatchJobError("--id-field does not apply to --format text (ids are line numbers)")
    batch_size = args.batch_size or model_config.batch_size
    if batch_size <= 0 or args.chunk_rows <= 0:
        raise BatchJobError("--batch-size and --chunk-rows must be > 0")
    return JobSpec(base, args.output, fmt, args.text_field, args.id_field, args.on_bad_row, batch_size, args.chunk_rows,
                   files)


def run(args: argparse.Namespace) -> int:
    """Run the job from parsed arguments; prints a summary to stderr. Returns the exit status."""
    try:
        model_config = _model_config(args)
        spec = job_spec(args, model_config)
        if args.engine == "ray":
            from .ray_job import run_ray_job

            summary = run_ray_job(spec, model_config, concurrency=args.concurrency, address=args.ray_address,
                                  overwrite=args.overwrite)
        else:
            with EmbeddingEngine.from_folder(model_config.path, model_config) as engine:
                summary = run_local_job(spec, engine, overwrite=args.overwrite, progress_bar=not args.no_progress)
    except (BatchJobError, ConfigError) as exc:
        _say(f"error: {exc}")
        return 1
    rate = summary.rows_read / summary.seconds if summary.seconds else 0.0
    _say(
        f"done: {summary.rows_embedded} rows embedded, {summary.bad_rows} bad rows"
        + (f" (listed in {spec.output / BAD_ROWS_DIR})" if summary.bad_rows else "")
        + f", {summary.tokens} tokens, {summary.parts} parts in {spec.output}, "
        f"{summary.seconds:.1f} s ({rate:.0f} rows/s)"
        + (f", resumed at row {summary.resumed_from_row}" if summary.resumed_from_row else "")
    )
    return 0
