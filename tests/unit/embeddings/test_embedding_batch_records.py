"""The batch job's record parsing and input counting (no model): every bad row gets a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from realizar_ort.embeddings.job import BatchJobError, Record, parse_json_line
from realizar_ort.embeddings.records import count_records, detect_format, input_files, read_records


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b'{"text": "hi", "id": 7}', Record(3, None, "hi")),
        (b'{"text": ""}', Record(3, None, "")),
        (b"   ", Record(3, None, None, "blank line")),
        (b'{"body": "x"}', Record(3, None, None, "missing field 'text'")),
        (b'{"text": 12}', Record(3, None, None, "field 'text' is int, expected a string")),
        (b'{"text": null}', Record(3, None, None, "field 'text' is null, expected a string")),
        (b'["text"]', Record(3, None, None, "expected a JSON object, got list")),
    ],
)
def test_parse_json_line(line: bytes, expected: Record) -> None:
    assert parse_json_line(3, line, "text", None) == expected


def test_parse_json_line_invalid_json_and_ids() -> None:
    bad = parse_json_line(0, b'{"text": "unterminated', "text", None)
    assert bad.text is None and bad.error is not None and bad.error.startswith("invalid JSON:")
    assert parse_json_line(1, b'{"text": "a", "id": 42}', "text", "id") == Record(1, "42", "a")
    assert parse_json_line(1, b'{"text": "a"}', "text", "id").error == "missing id field 'id'"
    assert parse_json_line(1, b'{"text": "a", "id": [1]}', "text", "id").error == "id field 'id' is list"


def test_text_and_jsonl_counting_match_reading(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_bytes("one\n\ntwo\r\nthré\xe9e".encode() + b"\n\xff\xfe bad utf8")
    records = list(read_records(path, "text", "text", None))
    assert [r.text for r in records[:4]] == ["one", "", "two", "thréée"]
    assert records[4].error is not None and records[4].error.startswith("not valid UTF-8")
    assert count_records(path, "text") == len(records) == 5


def test_csv_quoted_newlines_count_as_one_row(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text('id,text\n1,"a, b"\n2,"multi\nline ""quoted"""\n3\n', encoding="utf-8")
    records = list(read_records(path, "csv", "text", "id"))
    assert records[:2] == [Record(0, "1", "a, b"), Record(1, "2", 'multi\nline "quoted"')]
    assert records[2].error == "has 1 fields, the header has 2"
    assert count_records(path, "csv") == 3
    with pytest.raises(BatchJobError, match=r"has no column 'body' \(columns: id, text\)"):
        list(read_records(path, "csv", "body", None))


def test_detect_format() -> None:
    assert [detect_format(Path(p)) for p in ("a.jsonl", "b.CSV", "c.parquet", "d.txt")] == ["jsonl", "csv", "parquet", "text"]
    with pytest.raises(BatchJobError, match="pass --format"):
        detect_format(Path("data.xlsx"))


def test_input_files_from_a_file_a_directory_or_a_glob(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ("b.txt", "a.txt", "sub/c.txt", ".hidden.txt", "_job.txt", "notes.md"):
        (tmp_path / name).write_text("x\n")
    assert input_files(tmp_path / "a.txt", None) == (tmp_path / "a.txt", (), "text")
    names = ["a.txt", "b.txt", "sub/c.txt"]  # sorted by relative name; hidden, "_" and unknown suffixes skipped
    assert input_files(tmp_path, None) == (tmp_path, tuple(tmp_path / n for n in names), "text")
    assert input_files(tmp_path / "*.txt", None) == (tmp_path, (tmp_path / "a.txt", tmp_path / "b.txt"), "text")
    assert input_files(tmp_path / "**" / "*.txt", None)[1] == tuple(tmp_path / n for n in names)
    assert input_files(tmp_path / "*.md", "jsonl") == (tmp_path, (tmp_path / "notes.md",), "jsonl")
    with pytest.raises(BatchJobError, match=r"cannot tell the format of .*notes.md"):
        input_files(tmp_path / "*", None)
    (tmp_path / "d.jsonl").write_text("{}\n")
    with pytest.raises(BatchJobError, match=r"mixes formats \(jsonl, text\): pass --format"):
        input_files(tmp_path, None)
    with pytest.raises(BatchJobError, match=r"matches no input file"):
        input_files(tmp_path / "*.csv", None)
    with pytest.raises(BatchJobError, match=r"is not a file, a directory or a glob"):
        input_files(tmp_path / "missing.txt", None)
