"""What the local and the Ray embedding jobs share: the job's arguments, its summary, an input record, how
one JSON object becomes a record, and how one chunk of records is embedded and committed (a part file
written to a temporary name and renamed, with its bad rows beside it). Both jobs import this module;
neither imports the other's internals. pyarrow is imported only when a part is written.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .engine import EmbeddingEngine, InputTooLongError

__all__ = [
    "BAD_ROWS_DIR", "BatchJobError", "JobSpec", "JobSummary", "Record", "atomic_write", "bad_rows_name",
    "bad_rows_jsonl", "embed_chunk", "parse_json_line", "part_name", "record_from_object", "write_part",
]

BAD_ROWS_DIR = "_bad_rows"


class BatchJobError(RuntimeError):
    """The job cannot start or must stop (bad arguments, a foreign output folder, a bad row in fail mode)."""


@dataclass(frozen=True)
class Record:
    """One input record: its 0-based row number, id (``None``: use the row number), text or error."""

    row: int
    id: str | None
    text: str | None
    error: str | None = None


@dataclass(frozen=True)
class JobSpec:
    """``input`` is one file, or (``files`` not empty: a directory or a glob, Ray job only) the folder the
    ``files`` are named relative to."""

    input: Path
    output: Path
    format: str
    text_field: str
    id_field: str | None
    on_bad_row: str  # "skip" | "fail"
    batch_size: int
    chunk_rows: int
    files: tuple[Path, ...] = ()


@dataclass
class JobSummary:
    rows_read: int = 0
    rows_embedded: int = 0
    bad_rows: int = 0
    tokens: int = 0
    parts: int = 0
    resumed_from_row: int = 0
    seconds: float = 0.0
    complete: bool = False


def parse_json_line(row: int, line: bytes | str, text_field: str, id_field: str | None) -> Record:
    """Parse one JSONL line into a :class:`Record` (shared by the local and the Ray job)."""
    if not line.strip():
        return Record(row, None, None, "blank line")
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return Record(row, None, None, f"invalid JSON: {exc}")
    if not isinstance(obj, dict):
        return Record(row, None, None, f"expected a JSON object, got {type(obj).__name__}")
    return record_from_object(row, obj, text_field, id_field)


def record_from_object(row: int, obj: dict[str, Any], text_field: str, id_field: str | None) -> Record:
    record_id: str | None = None
    if id_field is not None:
        value = obj.get(id_field)
        if value is None or isinstance(value, bool) or not isinstance(value, (str, int)):
            reason = f"missing id field '{id_field}'" if value is None else f"id field '{id_field}' is {type(value).__name__}"
            return Record(row, None, None, reason)
        record_id = str(value)
    if text_field not in obj:
        return Record(row, record_id, None, f"missing field '{text_field}'")
    text = obj[text_field]
    if not isinstance(text, str):
        kind = "null" if text is None else type(text).__name__
        return Record(row, record_id, None, f"field '{text_field}' is {kind}, expected a string")
    return Record(row, record_id, text)


# ---- one chunk: embed, then commit --------------------------------------------------------------------------


def embed_chunk(engine: EmbeddingEngine, records: list[Record], batch_size: int) -> tuple[list[Record], list[Record], Any, int]:
    """Embed the good records: (good, bad, vectors, tokens); over-long texts (overflow = "error") become bad."""
    good = [r for r in records if r.error is None]
    bad = [r for r in records if r.error is not None]
    while True:
        try:
            result = engine.embed_with_usage([r.text or "" for r in good], batch_size=batch_size)
            return good, bad, result.vectors, result.total_tokens
        except InputTooLongError as exc:
            record = good.pop(exc.index)
            bad.append(Record(record.row, record.id, None, str(exc)))


TEMPORARY_SUFFIX = ".tmp"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    tmp = _temporary(path)
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _temporary(path: Path) -> Path:
    """A temporary name beside ``path``, unique to this writer (two writers of one part never share it).
    It starts with ``.``, so readers of the folder (pyarrow datasets, Spark, our own reader) skip it even
    while a straggling writer of a killed run still holds one."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMPORARY_SUFFIX}")


def remove_temporaries(*folders: Path) -> None:
    """Delete the temporary files writers left in ``folders`` (a killed run's half-written parts)."""
    for folder in folders:
        for path in folder.glob(f".*{TEMPORARY_SUFFIX}"):
            path.unlink(missing_ok=True)


def part_name(index: int | str) -> str:
    """``part-<index>.parquet``: a chunk number, or a ready-made key (the Ray job's ``<file>-<chunk>``)."""
    return f"part-{index if isinstance(index, str) else f'{index:05d}'}.parquet"


def bad_rows_name(index: int | str) -> str:
    return f"part-{index if isinstance(index, str) else f'{index:05d}'}.jsonl"


def bad_rows_jsonl(bad: list[Record], file: str | None = None) -> bytes:
    """The bad rows' listing, one JSON object per row (``file`` too, when the input has several files)."""
    where = {"file": file} if file is not None else {}
    return b"".join(orjson.dumps({**where, "row": r.row, "id": r.id, "reason": r.error}) + b"\n"
                    for r in sorted(bad, key=lambda r: r.row))


def write_part(out: Path, index: int | str, ids: list[Any], vectors: Any, dim: int, string_ids: bool,
               metadata: dict[str, str] | None = None) -> None:
    """``out/part-<index>.parquet`` (columns ``id``, ``vector``), written under a temporary name and renamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(vectors.reshape(-1), type=pa.float32())
    table = pa.table({
        "id": pa.array(ids, type=pa.string() if string_ids else pa.int64()),
        "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
    })
    if metadata:
        table = table.replace_schema_metadata({f"realizar.{k}": v for k, v in metadata.items()})
    tmp = _temporary(out / part_name(index))
    pq.write_table(table, tmp)
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, out / part_name(index))
