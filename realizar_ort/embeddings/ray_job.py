"""``realizar-ort embed --engine ray``: the batch job on Ray Data, one :class:`EmbeddingEngine` per actor.

Pipeline: ``read_text | read_csv | read_parquet -> map_batches(parse) -> filter(good) ->
map_batches(EmbedderActor, concurrency=N, batch_size=B) -> write_parquet``. Rows are parsed by the same
code as the local job (:func:`realizar_ort.embeddings.job.parse_json_line`), so both jobs accept and refuse the
same rows; bad rows go to ``OUT/_bad_rows/`` as JSON (skip) or stop the job before any embedding (fail).

Ray Data reads blocks in parallel and has no global row number, so this engine needs ``--id-field`` (ids are
written as strings, like the local job's with ``--id-field``). It is not resumable by this tool: Ray retries
failed tasks itself; rerun with ``--overwrite`` after a crash. Costs: the input is read twice (a cheap
validation pass, then the embedding pass); each actor loads the model once (~0.3 s, ~200 MB).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from ..config import EmbeddingModelConfig
from .job import BAD_ROWS_DIR, BatchJobError, JobSpec, JobSummary, Record, parse_json_line, record_from_object

__all__ = ["EmbedderActor", "parse_batch", "run_ray_job"]


def parse_batch(batch: Any, *, fmt: str, text_field: str, id_field: str) -> Any:
    """Ray ``map_batches`` function (pyarrow in, pyarrow out): columns ``id``, ``text``, ``error``."""
    import pyarrow as pa

    records: list[Record] = []
    if fmt == "jsonl":
        records = [parse_json_line(-1, line, text_field, id_field) for line in batch.column("text").to_pylist()]
    else:
        data = batch.to_pydict()
        for i in range(batch.num_rows):
            records.append(record_from_object(-1, {k: v[i] for k, v in data.items()}, text_field, id_field))
    return pa.table({
        "id": pa.array([r.id for r in records], type=pa.string()),
        "text": pa.array([r.text for r in records], type=pa.string()),
        "error": pa.array([r.error for r in records], type=pa.string()),
    })


class EmbedderActor:
    """Loads one EmbeddingEngine per Ray actor and embeds ``text`` batches into ``id`` + ``vector``."""

    def __init__(self, model_config: EmbeddingModelConfig, batch_size: int) -> None:
        from .engine import EmbeddingEngine

        self.engine = EmbeddingEngine.from_folder(model_config.path, model_config)
        self.batch_size = batch_size

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        vectors = self.engine.embed_numpy(batch.column("text").to_pylist(), batch_size=self.batch_size)
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        return pa.table({"id": batch.column("id"),
                         "vector": pa.FixedSizeListArray.from_arrays(flat, self.engine.dimension)})


def _read(spec: JobSpec) -> Any:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import ray.data

    path = str(spec.input)
    if spec.format in ("jsonl", "text"):
        return ray.data.read_text(path, drop_empty_lines=False)  # column "text": one line per row
    if spec.format == "csv":
        types = {spec.text_field: pa.string(), spec.id_field: pa.string()}
        return ray.data.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
    return ray.data.read_parquet(path, columns=[spec.text_field, spec.id_field])


def run_ray_job(spec: JobSpec, model_config: EmbeddingModelConfig, *, concurrency: int = 2,
                address: str | None = None, overwrite: bool = False) -> JobSummary:
    """Run the job on Ray Data (a local Ray unless ``address`` names a cluster)."""
    try:
        import ray
    except ImportError as exc:
        raise BatchJobError("--engine ray needs Ray Data: pip install 'realizar-ort[ray]'") from exc
    if spec.id_field is None:
        raise BatchJobError("--engine ray needs --id-field (Ray Data has no global row number to use as id)")
    if spec.output.exists():
        if not overwrite and any(spec.output.iterdir()):
            raise BatchJobError(f"{spec.output} is not empty; pass --overwrite or choose another --output")
        shutil.rmtree(spec.output)
    started = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)

    parsed = _read(spec).map_batches(
        parse_batch, batch_format="pyarrow",
        fn_kwargs={"fmt": spec.format, "text_field": spec.text_field, "id_field": spec.id_field},
    )
    bad = parsed.filter(lambda row: row["error"] is not None)
    bad_rows = bad.count()
    if bad_rows and spec.on_bad_row == "fail":
        first = bad.take(1)[0]
        raise BatchJobError(f"{bad_rows} bad rows in {spec.input}, e.g. id {first['id']}: {first['error']} "
                            f"(pass --on-bad-row skip to skip bad rows)")
    if bad_rows:
        bad.select_columns(["id", "error"]).write_json(str(spec.output / BAD_ROWS_DIR))
    good = parsed.filter(lambda row: row["error"] is None).select_columns(["id", "text"])
    # Actors must leave a CPU for the read/parse tasks, or the pipeline starves (Ray schedules by CPU count).
    actor_cpus = min(1.0, max(0.25, (ray.cluster_resources().get("CPU", 1.0) - 1.0) / concurrency))
    embedded = good.map_batches(
        EmbedderActor, batch_format="pyarrow", batch_size=spec.chunk_rows, concurrency=concurrency,
        num_cpus=actor_cpus,
        fn_constructor_kwargs={"model_config": model_config, "batch_size": spec.batch_size},
    )
    embedded.write_parquet(str(spec.output))
    rows_embedded = sum(1 for _ in Path(spec.output).glob("*.parquet")) and _count_rows(spec.output)
    return JobSummary(rows_read=rows_embedded + bad_rows, rows_embedded=rows_embedded, bad_rows=bad_rows,
                      parts=sum(1 for _ in spec.output.glob("*.parquet")),
                      seconds=time.perf_counter() - started, complete=True)


def _count_rows(folder: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in folder.glob("*.parquet"))
