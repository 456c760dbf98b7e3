"""What the local and the Ray embedding jobs share: the job's arguments, its summary, an input record, and
how one JSON object becomes a record. Both jobs import this module; neither imports the other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = ["BAD_ROWS_DIR", "BatchJobError", "JobSpec", "JobSummary", "Record", "parse_json_line", "record_from_object"]

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
    input: Path
    output: Path
    format: str
    text_field: str
    id_field: str | None
    on_bad_row: str  # "skip" | "fail"
    batch_size: int
    chunk_rows: int


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
