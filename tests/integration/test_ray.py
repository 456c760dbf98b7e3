"""Past one machine, on a local Ray cluster (``ray.init(num_cpus=2)``, one for the whole module):

- ``serve --ray``: two Ray Serve replicas of the app (tiny-llama3 chat + MiniLM) answer chat, streamed chat,
  tools and embeddings to the official openai client, through Serve's HAProxy ingress (the default) and
  through Serve's Python proxy (the fallback proxy that runs beside HAProxy on the head node: the
  ``ingress = "proxy"`` path); requests spread over both replicas (each replica's own /metrics says so); a
  killed replica is replaced and later requests succeed; a client that hangs up mid-stream, on either
  path, cancels the engine request on its replica.
- the Ray Data embedding job: ids from the row number, ``--format text``, and resume after a killed job
  with every row written exactly once.

The only test module that imports ray; skipped when the `ray` extra is not installed.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from realizar_ort.server import ray_serve  # noqa: E402  (needs ray)

from realizar_ort.config import (  # noqa: E402
    Config,
    EmbeddingModelConfig,
    LlmModelConfig,
    RayServeConfig,
    ServerConfig,
    SessionConfig,
)

pytestmark = pytest.mark.slow

PORT = 18610  # Serve's ingress (HAProxy); this project's test range for Ray is 18600-18699
URL = f"http://127.0.0.1:{PORT}"
PROXY_PORT = 18611  # Serve's Python proxy, which runs beside HAProxy on the head node (Serve's "fallback proxy")
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
RAY_ENV = {  # read by Ray's processes when they start: Serve's ports kept in this module's range
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(PROXY_PORT),
    "RAY_SERVE_HAPROXY_STATS_PORT": "18612", "RAY_SERVE_HAPROXY_METRICS_PORT": "18613",
    "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "18614", "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "18619",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",  # Serve's default 30 s would slow each teardown
}
LLM = "tiny-llama3"
EMB = "all-minilm-l6-v2"
MAX_TOKENS = 960  # for the request a disconnect cuts short
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_TOOL = {"type": "function", "function": {  # bounded: a random-weight model finishes every call
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}


@pytest.fixture(scope="module")
def cluster():
    env = {**RAY_ENV, **ray_serve.ray_env(Config())}  # the default ingress: HAProxy
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        yield
        ray.shutdown()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="class")
def served(cluster, tiny_llama3_dir: Path, minilm_dir: Path):
    config = Config(
        llm=LlmModelConfig(path=tiny_llama3_dir, max_batch_size=4, max_context=MAX_TOKENS + 64, max_queued=16,
                           default_max_tokens=16, session=SessionConfig(intra_op_threads=1)),
        embedding=EmbeddingModelConfig(path=minilm_dir, session=SessionConfig(intra_op_threads=1)),
        server=ServerConfig(port=PORT, ray=RayServeConfig(min_replicas=2, max_replicas=2, num_cpus=0.5)),
    )
    ray_serve.deploy(config)
    yield config
    serve.shutdown()


@pytest.fixture(scope="class")
def client(served):
    with openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0, timeout=120) as c:
        yield c


INGRESSES = pytest.mark.parametrize("url", [URL, PROXY_URL], ids=["haproxy", "python-proxy"])


def replica_metrics(wanted: set[str], attempts: int = 60) -> dict[str, str]:
    """Each wanted replica's own /metrics text (GET /metrics lands on one replica at a time)."""
    found: dict[str, str] = {}
    for _ in range(attempts):
        r = httpx.get(URL + "/metrics", timeout=30)
        name = r.headers[ray_serve.REPLICA_HEADER]
        if name in wanted:
            found[name] = r.text
        if set(found) == wanted:
            return found
    raise AssertionError(f"did not reach {wanted - set(found)} in {attempts} scrapes")


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def live_replicas(count: int = 2, attempts: int = 60) -> set[str]:
    """The names of ``count`` replicas answering now (from the header of each response)."""
    seen: set[str] = set()
    for _ in range(attempts):
        seen.add(httpx.get(URL + "/health", timeout=30).headers[ray_serve.REPLICA_HEADER])
        if len(seen) == count:
            return seen
    raise AssertionError(f"only {seen} answered in {attempts} requests")


def listener(port: int) -> str:
    """The name of the process listening on 127.0.0.1:``port``."""
    import psutil

    (pid,) = {c.pid for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}
    return psutil.Process(pid).name()


def haproxy_config(port: int) -> str:
    """The config file of the HAProxy listening on 127.0.0.1:``port`` (the one Serve wrote, from its ``-f``)."""
    import psutil

    (pid,) = {c.pid for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}
    cmdline = psutil.Process(pid).cmdline()
    return Path(cmdline[cmdline.index("-f") + 1]).read_text()


def running_replicas() -> int:
    status = serve.status().applications[ray_serve.APP_NAME].deployments["RealizarReplica"]
    return status.replica_states.get("RUNNING", 0)


def test_serve_ray_refuses_a_bad_config_before_starting_ray(tmp_path: Path, capsys, caplog) -> None:
    from realizar_ort.cli import main

    bad = tmp_path / "config.toml"
    bad.write_text('[models.embedding]\npath = "m"\n[server.ray]\nmin_replicas = 3\nmax_replicas = 2\n')
    assert main(["serve", "--ray", "--config", str(bad)]) == 2
    assert "'server.ray.min_replicas' (3) must be <= 'server.ray.max_replicas' (2)" in caplog.text
    bad.write_text('[models.embedding]\npath = "m"\n')
    assert main(["serve", "--ray", "--config", str(bad), "--port", "0"]) == 2
    assert "'server.port' must name a port for --ray" in capsys.readouterr().err
    assert not ray.is_initialized()


class TestServe:
    @INGRESSES
    def test_chat_stream_tools_and_embeddings_through_the_ingress(self, served, url):
        assert listener(PORT) == "haproxy" and "ProxyActor" in listener(PROXY_PORT)  # the paths under test
        # ray_env's RAY_SERVE_HAPROXY_TCP_NODELAY=1: SSE events leave HAProxy at once (no Nagle wait)
        assert re.search(r"^\s*option http-no-delay$", haproxy_config(PORT), re.MULTILINE)
        with openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120) as client:
            self.check_chat_stream_tools_and_embeddings(client, url)

    @staticmethod
    def check_chat_stream_tools_and_embeddings(client, url: str) -> None:
        full = client.chat.completions.create(model=LLM, messages=QUESTION, temperature=0, max_tokens=12)
        assert full.choices[0].message.content and full.usage.completion_tokens == 12
        stream = client.chat.completions.create(model=LLM, messages=QUESTION, temperature=0, max_tokens=12,
                                                stream=True)
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert "".join(pieces) == full.choices[0].message.content  # same greedy answer, on either replica
        called = client.chat.completions.create(model=LLM, messages=QUESTION, tools=[WEATHER_TOOL],
                                                tool_choice="required", temperature=0, max_tokens=80)
        (call,) = called.choices[0].message.tool_calls
        assert called.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
        jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])
        vectors = client.embeddings.create(model=EMB, input=["hello", "world"])
        assert [len(d.embedding) for d in vectors.data] == [384, 384]
        assert [m.id for m in client.models.list().data] == [LLM, EMB]
        assert httpx.get(url + "/ready").json()["models"] == [LLM, EMB]
        bad = httpx.post(url + "/v1/chat/completions", json={"model": LLM, "messages": QUESTION, "n": 2})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "n"

    def test_requests_spread_across_both_replicas(self, client):
        names: list[str] = []

        def ask() -> None:
            r = client.chat.completions.with_raw_response.create(model=LLM, messages=QUESTION, max_tokens=24)
            names.append(r.headers[ray_serve.REPLICA_HEADER])

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(names) == 8 and len(set(names)) == 2, names
        # each replica's own metrics count the chat requests it answered
        per_replica = replica_metrics(set(names))
        route = 'realizar_requests_total{route="/v1/chat/completions",status="200"}'
        for name, text in per_replica.items():
            assert metric(text, route) >= names.count(name) >= 1, (name, text)

    @INGRESSES
    def test_client_disconnect_mid_stream_cancels_the_engine_request(self, served, url):
        tokens = f'realizar_generation_tokens_total{{model="{LLM}"}}'
        cancelled = "realizar_cancelled_requests_total"
        before = {name: (metric(text, tokens), metric(text, cancelled))
                  for name, text in replica_metrics(live_replicas()).items()}
        body = {"model": LLM, "messages": QUESTION, "max_tokens": MAX_TOKENS, "ignore_eos": True, "stream": True}
        with httpx.Client(timeout=60) as c, c.stream("POST", url + "/v1/chat/completions", json=body) as r:
            name = r.headers[ray_serve.REPLICA_HEADER]
            events = 0
            for line in r.iter_lines():
                events += line.startswith("data: ")
                if events == 6:
                    break  # hang up mid-stream (the role chunk, then 5 content chunks)
        deadline = time.monotonic() + 30
        while True:
            text = replica_metrics({name})[name]
            if metric(text, "realizar_running_batch_size") == 0:
                break
            assert time.monotonic() < deadline, "the engine request kept running after the client left"
            time.sleep(0.2)
        time.sleep(0.5)
        after = replica_metrics({name})[name]
        assert metric(after, tokens) == metric(text, tokens)  # nothing more generated: the slot is free
        assert 5 <= metric(after, tokens) - before[name][0] < MAX_TOKENS  # stopped early, not run to max_tokens
        assert metric(after, cancelled) == before[name][1] + 1

    def test_a_killed_replica_is_replaced(self, client):
        r = client.chat.completions.with_raw_response.create(model=LLM, messages=QUESTION, max_tokens=4)
        victim = r.headers[ray_serve.REPLICA_HEADER]
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        deadline = time.monotonic() + 150
        seen: set[str] = set()
        while len(seen - {victim}) < 2:  # two live replicas answer, the new one among them
            assert time.monotonic() < deadline, f"no replacement for {victim}; seen {seen}"
            try:
                seen.add(httpx.get(URL + "/ready", timeout=10).headers[ray_serve.REPLICA_HEADER])
            except (httpx.HTTPError, KeyError):
                pass
            time.sleep(0.2)
        assert running_replicas() == 2
        for _ in range(4):
            ok = client.chat.completions.create(model=LLM, messages=QUESTION, max_tokens=4)
            assert ok.choices[0].finish_reason == "length"


# ---- the Ray Data embedding job (after the Serve app is gone: its actors get the cluster's CPUs) --------

TEXTS = ["The cat sat on the mat.", "", "Zürich, São Paulo, 東京 and 🚀", 'quotes "inside", commas, too',
         "a much longer sentence " * 30, "short", "Ελληνικά και русский"]


@pytest.fixture(scope="module")
def embedder(minilm_dir: Path):
    from realizar_ort.embeddings.engine import EmbeddingEngine

    with EmbeddingEngine.from_folder(minilm_dir, EmbeddingModelConfig(path=minilm_dir)) as engine:
        yield engine


def job_spec(path: Path, out: Path, fmt: str, **kw: object):
    from realizar_ort.embeddings.job import JobSpec

    base = {"input": path, "output": out, "format": fmt, "text_field": "text", "id_field": None,
            "on_bad_row": "skip", "batch_size": 8, "chunk_rows": 32}
    return JobSpec(**{**base, **kw})  # type: ignore[arg-type]


def read_output(folder: Path):
    import pyarrow.dataset as pads

    table = pads.dataset(folder, format="parquet").to_table().sort_by("id")
    vectors = table.column("vector").combine_chunks().flatten().to_numpy().reshape(-1, 384)
    return table.column("id").to_pylist(), vectors


def bad_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted((folder / "_bad_rows").glob("*.jsonl"))
            for line in f.read_text().splitlines()]


def test_ray_job_writes_the_local_jobs_rows(cluster, tmp_path: Path, minilm_dir: Path, embedder):
    """JSONL without --id-field (ids: row numbers) and with bad rows; --format text: the resume test."""
    import numpy as np

    from realizar_ort.embeddings.batch import run_local_job
    from realizar_ort.embeddings.ray_job import run_ray_job

    fmt = "jsonl"
    path = tmp_path / "input.jsonl"
    lines = [json.dumps({"text": TEXTS[i % len(TEXTS)] + f" #{i}"}, ensure_ascii=False) for i in range(150)]
    lines[17], lines[40] = '{"text": 3.5}', "{broken"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    local = run_local_job(job_spec(path, tmp_path / "local", fmt), embedder, progress_bar=False)
    model = EmbeddingModelConfig(path=minilm_dir, session=SessionConfig(intra_op_threads=1))
    remote = run_ray_job(job_spec(path, tmp_path / "ray", fmt), model, concurrency=2)
    for field in ("rows_read", "rows_embedded", "bad_rows", "tokens", "parts"):
        assert getattr(remote, field) == getattr(local, field), field
    local_ids, local_vectors = read_output(tmp_path / "local")
    ray_ids, ray_vectors = read_output(tmp_path / "ray")
    assert ray_ids == local_ids == [i for i in range(150) if i not in (17, 40)]
    np.testing.assert_allclose(ray_vectors, local_vectors, atol=1e-5)
    assert bad_rows(tmp_path / "ray") == bad_rows(tmp_path / "local")


def test_ray_job_bad_row_in_fail_mode_names_the_row(cluster, tmp_path: Path, minilm_dir: Path):
    from realizar_ort.embeddings.job import BatchJobError
    from realizar_ort.embeddings.ray_job import run_ray_job

    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n{"text": 5}\n', encoding="utf-8")
    with pytest.raises(BatchJobError, match=r"^row 1 of .*bad.jsonl: field 'text' is int, expected a string \(pass"):
        run_ray_job(job_spec(path, tmp_path / "out", "jsonl", on_bad_row="fail"), EmbeddingModelConfig(path=minilm_dir))


def kill_job_after_parts(args: list[str], out: Path, parts: int) -> dict[str, int]:
    """Run ``realizar-ort embed --engine ray ARGS`` as a driver on the module's cluster, SIGKILL it once
    ``parts`` parts have landed; the committed parts' mtimes."""
    import os
    import signal
    import subprocess
    import sys

    script = ("import argparse, sys, ray; ray.init(address=sys.argv[1], log_to_driver=False); "
              "from realizar_ort.embeddings import batch as b; p = argparse.ArgumentParser(); "
              "b.add_arguments(p); sys.exit(b.run(p.parse_args(sys.argv[2:])))")
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, "-c", script, address, *args, "--engine", "ray", "--no-progress"],
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while len(list(out.glob("part-*.parquet"))) < parts:
        assert proc.poll() is None and time.monotonic() < deadline, "the job ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}


def test_ray_job_resumes_after_a_kill_exactly_once(cluster, tmp_path: Path, minilm_dir: Path, embedder):
    import numpy as np

    from realizar_ort.embeddings.ray_job import run_ray_job

    rows = [f"row {i}: {TEXTS[i % len(TEXTS)][:60]}" for i in range(1200)]
    path = tmp_path / "input.txt"
    path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    args = ["--input", str(path), "--output", str(out), "--model", str(minilm_dir), "--chunk-rows", "50",
            "--batch-size", "16"]
    committed = kill_job_after_parts(args, out, 3)
    assert 3 <= len(committed) < 24

    model = EmbeddingModelConfig(path=minilm_dir, session=SessionConfig(intra_op_threads=1))
    spec = job_spec(path, out, "text", chunk_rows=50, batch_size=16)
    summary = run_ray_job(spec, model, concurrency=2)
    ids, vectors = read_output(out)
    assert ids == list(range(1200))  # every row exactly once
    assert (summary.rows_read, summary.rows_embedded, summary.parts) == (1200, 1200, 24)
    still = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    resumed = {name for name in committed if still.get(name) == committed[name]}
    assert summary.resumed_from_row >= 50 * len(resumed) >= 150  # committed parts were not redone
    np.testing.assert_allclose(vectors, embedder.embed_numpy(rows), atol=1e-5)
    again = run_ray_job(spec, model, concurrency=2)  # a finished job: nothing to do
    assert again.rows_embedded == 1200 and {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == still


def test_ray_job_reads_a_directory_and_resumes_across_files(cluster, tmp_path: Path, minilm_dir: Path, embedder):
    """A directory of text files (one in a subfolder, one with a bad line, a hidden file skipped): ids are
    ``<file>:<row>``, each file read once by its own read task; killed and resumed, every row exactly once."""
    import numpy as np

    from realizar_ort.embeddings.ray_job import run_ray_job
    from realizar_ort.embeddings.records import input_files

    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    sizes = {"a.txt": 500, "sub/b.txt": 400, "c.txt": 300}
    texts: dict[str, str] = {}
    for name, n in sizes.items():
        lines = [f"{name} row {i}: {TEXTS[i % len(TEXTS)][:60]}".encode() for i in range(n)]
        if name == "c.txt":
            lines[7] = b"\xff not utf-8"
        (folder / name).write_bytes(b"".join(line + b"\n" for line in lines))
        texts.update({f"{name}:{i}": line.decode() for i, line in enumerate(lines) if not (name == "c.txt" and i == 7)})
    (folder / ".hidden.txt").write_text("never read\n")
    out = tmp_path / "out"
    args = ["--input", str(folder), "--output", str(out), "--model", str(minilm_dir), "--chunk-rows", "50",
            "--batch-size", "16"]
    committed = kill_job_after_parts(args, out, 3)
    assert 3 <= len(committed) < 24

    base, files, fmt = input_files(folder, None)
    assert (base, fmt, [f.relative_to(folder).as_posix() for f in files]) == (folder, "text", ["a.txt", "c.txt", "sub/b.txt"])
    model = EmbeddingModelConfig(path=minilm_dir, session=SessionConfig(intra_op_threads=1))
    spec = job_spec(base, out, fmt, chunk_rows=50, batch_size=16, files=files)
    summary = run_ray_job(spec, model, concurrency=2)
    ids, vectors = read_output(out)
    assert ids == sorted(texts)  # every row of every file exactly once, id = file + row number
    assert (summary.rows_read, summary.rows_embedded, summary.bad_rows, summary.parts) == (1200, 1199, 1, 24)
    assert sorted(p.name for p in out.glob("part-*.parquet"))[:2] == ["part-00000-00000.parquet", "part-00000-00001.parquet"]
    assert [(b["file"], b["row"]) for b in bad_rows(out)] == [("c.txt", 7)]
    still = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    resumed = {name for name in committed if still.get(name) == committed[name]}
    assert summary.resumed_from_row >= 50 * len(resumed) >= 150  # committed parts were not redone
    np.testing.assert_allclose(vectors, embedder.embed_numpy([texts[i] for i in ids]), atol=1e-5)
    again = run_ray_job(spec, model, concurrency=2)  # a finished job: nothing to do
    assert again.rows_embedded == 1199 and {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == still
