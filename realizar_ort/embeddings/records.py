"""Reading a batch job's input as a stream of :class:`~.job.Record` (JSONL, CSV, Parquet or plain text), in
input order with 0-based row numbers. Shared by the local and the Ray job, so both accept and refuse the
same rows. pyarrow is imported only to read Parquet.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from .job import BatchJobError, Record, parse_json_line, record_from_object

__all__ = ["FORMATS", "count_records", "detect_format", "input_files", "read_records"]

FORMATS = ("jsonl", "csv", "parquet", "text")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet",
             ".txt": "text", ".text": "text"}


def detect_format(path: Path) -> str:
    fmt = _SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise BatchJobError(f"cannot tell the format of {path} from its suffix: pass --format {'|'.join(FORMATS)}")
    return fmt


def input_files(pattern: Path, fmt: str | None) -> tuple[Path, tuple[Path, ...], str]:
    """What ``--input`` names: ``(base, files, format)``. A file gives ``(file, (), format)``. A directory
    (searched recursively) or a glob (``data/*.jsonl``, ``data/**/*.txt``) gives the folder the files are
    named relative to and the matching files, sorted by that relative name, so a file's place and its rows'
    ids (``<relative name>:<row>``) do not depend on the order the filesystem lists them. Names starting
    with ``.`` or ``_`` are skipped (hidden files, job folders). Without ``fmt``, every file's suffix must
    name the same format."""
    if pattern.is_file():
        return pattern, (), fmt or detect_format(pattern)
    if pattern.is_dir():
        base, matches = pattern, pattern.rglob("*")
    elif any(ch in str(pattern) for ch in "*?["):
        parts = pattern.parts
        first = next(i for i, part in enumerate(parts) if any(ch in part for ch in "*?["))
        base = Path(*parts[:first]) if first else Path(".")
        matches = base.glob(str(Path(*parts[first:])))
    else:
        raise BatchJobError(f"--input {pattern} is not a file, a directory or a glob")
    files = sorted((p for p in matches if p.is_file()
                    and not any(part.startswith((".", "_")) for part in p.relative_to(base).parts)),
                   key=lambda p: p.relative_to(base).as_posix())
    if fmt is None:
        files = [p for p in files if p.suffix.lower() in _SUFFIXES] if pattern.is_dir() else files
        formats = {detect_format(p) for p in files}
        if len(formats) > 1:
            raise BatchJobError(f"--input {pattern} mixes formats ({', '.join(sorted(formats))}): pass --format "
                                f"or narrow the input to one kind of file")
        fmt = formats.pop() if formats else None
    if not files or fmt is None:
        raise BatchJobError(f"--input {pattern} matches no input file")
    return base, tuple(files), fmt


def read_records(path: Path, fmt: str, text_field: str, id_field: str | None) -> Iterator[Record]:
    """Stream the input's records in order; bad ones carry an ``error`` instead of text."""
    if fmt == "jsonl":
        with path.open("rb") as f:
            for row, line in enumerate(f):
                yield parse_json_line(row, line.rstrip(b"\r\n"), text_field, id_field)
    elif fmt == "text":
        with path.open("rb") as f:
            for row, raw in enumerate(f):
                try:
                    yield Record(row, None, raw.rstrip(b"\r\n").decode("utf-8"))
                except UnicodeDecodeError as exc:
                    yield Record(row, None, None, f"not valid UTF-8: {exc}")
    elif fmt == "csv":
        yield from _read_csv(path, text_field, id_field)
    elif fmt == "parquet":
        yield from _read_parquet(path, text_field, id_field)
    else:
        raise BatchJobError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")


def _read_csv(path: Path, text_field: str, id_field: str | None) -> Iterator[Record]:
    with path.open("r", encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return
        _check_columns(path, header, text_field, id_field)
        for row, values in enumerate(reader):
            if len(values) != len(header):
                yield Record(row, None, None, f"has {len(values)} fields, the header has {len(header)}")
            else:
                yield record_from_object(row, dict(zip(header, values)), text_field, id_field)


def _read_parquet(path: Path, text_field: str, id_field: str | None) -> Iterator[Record]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    schema = parquet.schema_arrow
    _check_columns(path, schema.names, text_field, id_field)
    kind = schema.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise BatchJobError(f"{path}: column '{text_field}' has type {kind}, expected a string column")
    columns = [text_field] + ([id_field] if id_field and id_field != text_field else [])
    row = 0
    for batch in parquet.iter_batches(batch_size=1024, columns=columns):
        data = batch.to_pydict()
        texts = data[text_field]
        ids = data[id_field] if id_field else [None] * len(texts)
        for text, record_id in zip(texts, ids):
            yield record_from_object(row, {text_field: text, **({id_field: record_id} if id_field else {})}, text_field, id_field)
            row += 1


def _check_columns(path: Path, names: list[str], text_field: str, id_field: str | None) -> None:
    for name in (text_field, id_field):
        if name is not None and name not in names:
            raise BatchJobError(f"{path} has no column '{name}' (columns: {', '.join(names)})")


def count_records(path: Path, fmt: str) -> int:
    """Records in the input, for the progress bar (one streaming pass; Parquet reads its footer only)."""
    if fmt in ("jsonl", "text"):
        lines, last = 0, b"\n"
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                lines += block.count(b"\n")
                last = block[-1:]
        return lines + (last != b"\n")
    if fmt == "csv":
        with path.open("r", encoding="utf-8", newline="") as f:
            return max(0, sum(1 for _ in csv.reader(f)) - 1)
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
