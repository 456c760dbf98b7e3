"""``realizar-ort embed --engine ray``: the batch job on Ray Data, one :class:`EmbeddingEngine` per actor.

Pipeline: ``from_items(input files) -> map_batches(read_chunks) -> map_batches(ChunkEmbedder,
batch_size=1, concurrency=N)``, and the driver collects each chunk's counts. One task per input file reads
that file once, in order, with the local job's reader (:func:`~.records.read_records`: JSONL, CSV, Parquet
or ``--format text``, the same rows accepted and refused), and emits one Ray Data row per chunk of
``--chunk-rows`` rows of that file (row numbers, ids, texts, bad rows). Each actor embeds whole chunks and
commits each one as the local job does: its bad rows to ``OUT/_bad_rows/part-<key>.jsonl``, then
``OUT/part-<key>.parquet``, each written under a temporary name and renamed.

One input file: the output is the local job's (chunk ``k`` is ``part-<k>``, ids are the 0-based row
number, or ``--id-field`` as strings), so one input gives the same Parquet rows on either engine. A
directory or a glob (:func:`~.records.input_files`: sorted by relative name): chunk ``k`` of file ``f`` is
``part-<f>-<k>`` and ids are the strings ``<relative file name>:<row>`` (or ``--id-field``); bad rows are
listed with their file.

Resume, exactly once: a chunk always holds the same rows (``[k * chunk_rows, (k + 1) * chunk_rows)`` of its
file), and its part appears (by rename) only after it is complete, so a rerun of the same job (checked
against ``OUT/_job.json``: every input file's name, size and mtime, fields, chunk size, model) skips every
chunk whose part exists and redoes the rest; a task Ray retries rewrites the same part. Each part records
its counts in its Parquet metadata, from which the final summary is summed (``resumed_from_row`` is then
the number of rows already committed before this run).

``--output`` must be a folder every node can write (a shared filesystem) and the model folder must exist
at the same path on every node. Costs: each actor loads the model once (~0.3 s, ~200 MB); chunks travel
through Ray's object store once.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..config import EmbeddingModelConfig
from ..manifest import load_manifest
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
from .records import read_records

__all__ = ["JOB_FILE", "ChunkEmbedder", "chunk_key", "input_list", "read_chunks", "run_ray_job"]

JOB_FILE = "_job.json"
_COUNTS = ("rows_read", "rows_embedded", "bad_rows", "tokens")


# ---- the read task: the input, once, as whole chunks ----------------------------------------------------


def input_list(spec: JobSpec) -> list[tuple[int, Path, str | None]]:
    """``(index, path, name)`` of each input file; ``name`` (relative to ``spec.input``) only when several."""
    if not spec.files:
        return [(0, spec.input, None)]
    return [(i, path, path.relative_to(spec.input).as_posix()) for i, path in enumerate(spec.files)]


def chunk_key(file_index: int, k: int, multi: bool) -> str:
    """The part key of chunk ``k`` of a file: ``00007`` (one input file), ``00002-00007`` (several)."""
    return f"{file_index:05d}-{k:05d}" if multi else f"{k:05d}"


def read_chunks(batch: Any, *, spec: JobSpec, done: frozenset[str]) -> Iterator[Any]:
    """Ray ``map_batches`` generator over input files (columns ``index``, ``path``, ``name``): one pyarrow row
    per chunk not in ``done`` (``chunk``, ``file``, and list columns ``rows``, ``ids``, ``texts``,
    ``errors``). Raises :class:`BatchJobError` at a bad row when ``on_bad_row`` is fail."""
    for file in batch.to_pylist():
        yield from _file_chunks(spec, done, file["index"], Path(file["path"]), file["name"])


def _file_chunks(spec: JobSpec, done: frozenset[str], file_index: int, path: Path, name: str | None) -> Iterator[Any]:
    multi = name is not None
    chunk: list[Record] = []
    index = -1
    for record in read_records(path, spec.format, spec.text_field, spec.id_field):
        k = record.row // spec.chunk_rows
        if k != index:
            if chunk:
                yield _chunk_table(chunk_key(file_index, index, multi), path, name, chunk)
            chunk, index = [], k
        if chunk_key(file_index, k, multi) in done:
            continue
        if record.error is not None and spec.on_bad_row == "fail":
            raise BatchJobError(_bad_row_message(path, record))
        if multi and record.id is None:  # a stable id from the input: file + row number
            record = Record(record.row, f"{name}:{record.row}", record.text, record.error)
        chunk.append(record)
    if chunk:
        yield _chunk_table(chunk_key(file_index, index, multi), path, name, chunk)


def _chunk_table(key: str, path: Path, name: str | None, records: list[Record]) -> Any:
    import pyarrow as pa

    return pa.table({
        "chunk": pa.array([key], pa.string()),
        "path": pa.array([str(path)], pa.string()),
        "file": pa.array([name], pa.string()),
        "rows": pa.array([[r.row for r in records]], pa.list_(pa.int64())),
        "ids": pa.array([[r.id for r in records]], pa.list_(pa.string())),
        "texts": pa.array([[r.text for r in records]], pa.list_(pa.string())),
        "errors": pa.array([[r.error for r in records]], pa.list_(pa.string())),
    })


def _bad_row_message(path: Path, record: Record) -> str:
    return f"row {record.row} of {path}: {record.error} (pass --on-bad-row skip to skip bad rows)"


# ---- the actors: embed and commit whole chunks ---------------------------------------------------------


class ChunkEmbedder:
    """One EmbeddingEngine per Ray actor; each call embeds and commits the chunks it is given."""

    def __init__(self, model_config: EmbeddingModelConfig, spec: JobSpec) -> None:
        from .engine import EmbeddingEngine

        self.engine = EmbeddingEngine.from_folder(model_config.path, model_config)
        self.spec = spec

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        counts: dict[str, list[int]] = {name: [] for name in _COUNTS}
        for row in batch.to_pylist():
            records = [Record(*fields) for fields in zip(row["rows"], row["ids"], row["texts"], row["errors"])]
            for name, value in zip(_COUNTS, self._commit(row["chunk"], Path(row["path"]), row["file"], records)):
                counts[name].append(value)
        return pa.table({name: pa.array(values, pa.int64()) for name, values in counts.items()})

    def _commit(self, key: str, path: Path, name: str | None, records: list[Record]) -> tuple[int, int, int, int]:
        spec = self.spec
        good, bad, vectors, tokens = embed_chunk(self.engine, records, spec.batch_size)
        if bad and spec.on_bad_row == "fail":
            raise BatchJobError(_bad_row_message(path, bad[0]))
        counts = (len(records), len(good), len(bad), tokens)
        if bad:  # first the bad rows, then the part: a part on disk means its whole chunk is committed
            atomic_write(spec.output / BAD_ROWS_DIR / bad_rows_name(key), bad_rows_jsonl(bad, name))
        string_ids = spec.id_field is not None or bool(spec.files)  # several files: ids are "<file>:<row>"
        ids = [r.id if string_ids else r.row for r in good]
        write_part(spec.output, key, ids, vectors, self.engine.dimension, string_ids,
                   metadata={name: str(value) for name, value in zip(_COUNTS, counts)})
        return counts


# ---- the driver ----------------------------------------------------------------------------------------


def _fingerprint(spec: JobSpec, model_config: EmbeddingModelConfig) -> dict[str, Any]:
    manifest = load_manifest(model_config.path)
    if spec.files:
        where: dict[str, Any] = {"input": str(spec.input.resolve()), "files": [
            [name, path.stat().st_size, path.stat().st_mtime_ns] for _, path, name in input_list(spec)]}
    else:
        stat = spec.input.stat()
        where = {"input": str(spec.input.resolve()), "input_size": stat.st_size, "input_mtime_ns": stat.st_mtime_ns}
    return {
        "engine": "ray", **where, "format": spec.format, "text_field": spec.text_field,
        "id_field": spec.id_field, "chunk_rows": spec.chunk_rows, "model": manifest.name,
        "model_sha256": manifest.source.get("sha256"), "overflow": model_config.overflow,
    }


def _prepare_output(spec: JobSpec, job: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """The saved job state (fresh or resumed), after removing anything uncommitted."""
    out = spec.output
    job_path = out / JOB_FILE
    if out.exists() and not out.is_dir():
        raise BatchJobError(f"--output {out} exists and is not a directory")
    if overwrite and out.exists():
        shutil.rmtree(out)
    state: dict[str, Any] = {"job": job, "complete": False, "summary": None}
    if job_path.is_file():
        saved = json.loads(job_path.read_text(encoding="utf-8"))
        if saved.get("job") != job:
            changed = sorted(k for k in job if saved.get("job", {}).get(k) != job[k])
            raise BatchJobError(f"{out} holds a different job ({', '.join(changed)} changed); pass --overwrite "
                                f"to start over or choose another --output")
        state = saved
    elif out.is_dir() and any(out.iterdir()):
        raise BatchJobError(f"{out} is not empty and holds no {JOB_FILE}; pass --overwrite or another --output")
    (out / BAD_ROWS_DIR).mkdir(parents=True, exist_ok=True)
    done = _done_chunks(out)
    remove_temporaries(out, out / BAD_ROWS_DIR)
    for path in (out / BAD_ROWS_DIR).glob("part-*.jsonl"):  # bad rows of a chunk whose part never landed
        if _key(path) not in done:
            path.unlink()
    atomic_write(job_path, json.dumps(state, indent=2).encode())
    return state


def _key(path: Path) -> str:
    """``part-<key>.parquet`` or ``.jsonl`` -> ``<key>``."""
    return path.name.split(".")[0].removeprefix("part-")


def _done_chunks(out: Path) -> set[str]:
    return {_key(p) for p in out.glob("part-*.parquet")}


def _committed_counts(out: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    totals = dict.fromkeys(_COUNTS, 0)
    for path in out.glob("part-*.parquet"):
        meta = pq.read_schema(path).metadata or {}
        for name in _COUNTS:
            totals[name] += int(meta.get(f"realizar.{name}".encode(), b"0"))
    return totals


def run_ray_job(spec: JobSpec, model_config: EmbeddingModelConfig, *, concurrency: int = 2,
                address: str | None = None, overwrite: bool = False) -> JobSummary:
    """Run (or resume) the job on Ray Data (a local Ray unless ``address`` names a cluster)."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise BatchJobError("--engine ray needs Ray Data: pip install 'realizar-ort[ray]'") from exc
    if concurrency <= 0:
        raise BatchJobError("--concurrency must be > 0")
    started = time.perf_counter()
    state = _prepare_output(spec, _fingerprint(spec, model_config), overwrite)
    if state["complete"]:
        print(f"[embed] {spec.output} is already complete; nothing to do", file=sys.stderr, flush=True)
        return JobSummary(**state["summary"])
    done = frozenset(_done_chunks(spec.output))
    before = _committed_counts(spec.output)
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)

    # The read task is light; the actors get the rest of the free CPUs (Ray schedules by CPU count).
    free = ray.available_resources().get("CPU", 1.0)
    read_cpus = 0.25
    actor_cpus = min(1.0, max(0.25, (free - read_cpus) / concurrency))
    context = ray.data.DataContext.get_current()
    block_size = context.target_max_block_size
    context.target_max_block_size = 1  # every chunk its own block: embedding starts while the input is read
    try:
        # Remote args given as a function keep the reads tasks of their own: fused into the actors' operator
        # (Ray Data's default), an input file's row would make one actor read *and* embed all of that file.
        files = [{"index": i, "path": str(path), "name": name} for i, path, name in input_list(spec)]
        chunks = ray.data.from_items(files, override_num_blocks=len(files)).map_batches(  # a read task per file
            read_chunks, batch_size=1, batch_format="pyarrow", fn_kwargs={"spec": spec, "done": done},
            ray_remote_args_fn=lambda: {"num_cpus": read_cpus})
        committed = chunks.map_batches(
            ChunkEmbedder, batch_size=1, batch_format="pyarrow", concurrency=concurrency, num_cpus=actor_cpus,
            fn_constructor_kwargs={"model_config": model_config, "spec": spec})
        for _ in committed.iter_batches(batch_size=None):
            pass
    except Exception as exc:
        raise _job_error(exc) from exc
    finally:
        context.target_max_block_size = block_size
    totals = _committed_counts(spec.output)
    summary = JobSummary(**totals, parts=len(_done_chunks(spec.output)), resumed_from_row=before["rows_read"],
                         seconds=time.perf_counter() - started, complete=True)
    state.update(complete=True, summary=asdict(summary))
    atomic_write(spec.output / JOB_FILE, json.dumps(state, indent=2).encode())
    return summary


def _job_error(exc: BaseException) -> BaseException:
    """Our BatchJobError out of Ray's wrappers (a bad row in fail mode), else the Ray error as it is."""
    seen: BaseException | None = exc
    for _ in range(16):  # Ray's task error keeps the original in `.cause`; Ray Data chains with __cause__
        if seen is None:
            break
        if type(seen) is BatchJobError:
            return BatchJobError(str(seen))
        seen = getattr(seen, "cause", None) or seen.__cause__
    match = re.search(r"BatchJobError: (.+)", str(exc))
    return BatchJobError(match.group(1).strip()) if match else exc
