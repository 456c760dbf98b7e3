"""What Ray costs us, same run, same machine: Ray Serve's proxy vs the plain server, and the Ray Data embed
job vs the local one.

    flock /work/bench.lock .venv/bin/python bench/ray_overhead.py [--model models/smollm2-135m-instruct]
        [--requests 4] [--max-tokens 64] [--streams 4] [--rounds 4] [--rows 3000] [--skip-serve] [--skip-embed]

Serving: the same config served twice, both in child processes: ``realizar-ort serve`` (uvicorn) and a
Ray Serve deployment with one replica (``realizar_ort.server.ray_serve``, on a local ``ray.init(num_cpus=2)``).
Each round sends ``requests`` streaming requests to both servers, interleaved one by one (order swapped
each pair; TTFT and decode tokens/s measured at the client from the SSE events; ``ignore_eos`` fixes every
answer at ``max-tokens``), then ``streams`` concurrent streams to each (aggregate tokens/s). Reported:
medians, and the median of per-pair Serve/plain ratios with their range (target: within 10%).

Embedding: ``rows`` sentences embedded by the local job (one process, 2 threads) and by the Ray Data job
(2 actors, 1 thread each); rows/s over the whole job, start-up included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
PLAIN_PORT, SERVE_PORT = 18621, 18620
PROMPTS = ["What is the capital of France?", "Name a primary colour.", "What do bees make?",
           "Which planet is the largest?", "Say hello in Spanish.", "What is 2 + 2?"]


def write_config(folder: Path, model: Path, port: int) -> Path:
    path = folder / f"config-{port}.toml"
    path.write_text(f"""
[models.llm]
path = "{model.resolve()}"
max_batch_size = 8
max_context = 1024
[models.llm.session]
intra_op_threads = 2
[server]
host = "127.0.0.1"
port = {port}
log_level = "warning"
[server.ray]
min_replicas = 1
max_replicas = 1
num_cpus = 1.0
""")
    return path


def wait_ready(url: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become ready")


async def one_stream(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> tuple[float, float, int]:
    """(TTFT s, decode seconds after the first token, completion tokens) of one streamed request."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    end = time.perf_counter()
    assert first is not None and tokens == max_tokens, (tokens, max_tokens)
    return first - started, end - first, tokens


async def measure_pairs(urls: dict[str, str], model: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Paired runs, interleaved request by request (order swapped each pair), so drift on a shared machine
    hits both servers alike: per-pair TTFT, batch-1 decode tok/s, and aggregate tok/s of ``streams`` streams."""
    out: dict[str, list[float]] = {f"{name}_{key}": [] for name in urls for key in ("ttft_ms", "tok_s", "agg_tok_s")}
    async with httpx.AsyncClient(timeout=300) as client:
        for url in urls.values():
            await one_stream(client, url, model, "warm up", 4)
        for r in range(args.rounds):
            for i in range(args.requests):
                order = list(urls) if (r * args.requests + i) % 2 == 0 else list(urls)[::-1]
                for name in order:
                    ttft, decode, tokens = await one_stream(client, urls[name], model, PROMPTS[i % len(PROMPTS)],
                                                            args.max_tokens)
                    out[f"{name}_ttft_ms"].append(1000 * ttft)
                    out[f"{name}_tok_s"].append((tokens - 1) / decode)
            for name in (list(urls) if r % 2 == 0 else list(urls)[::-1]):
                started = time.perf_counter()
                results = await asyncio.gather(*(one_stream(client, urls[name], model, PROMPTS[k % len(PROMPTS)],
                                                            args.max_tokens) for k in range(args.streams)))
                out[f"{name}_agg_tok_s"].append(sum(x[2] for x in results) / (time.perf_counter() - started))
            print(f"  round {r}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in out.items()), flush=True)
    return out


def bench_serve(args: argparse.Namespace, folder: Path) -> None:
    import ray
    from realizar_ort.server import ray_serve

    from realizar_ort.config import load_config

    model_name = args.model.name
    plain = subprocess.Popen([sys.executable, "-m", "realizar_ort", "serve", "--config",
                              str(write_config(folder, args.model, PLAIN_PORT))],
                             stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "2"})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray_serve.deploy(load_config(write_config(folder, args.model, SERVE_PORT)))
        urls = {"plain": f"http://127.0.0.1:{PLAIN_PORT}", "serve": f"http://127.0.0.1:{SERVE_PORT}"}
        wait_ready(urls["plain"])
        wait_ready(urls["serve"])
        runs = asyncio.run(measure_pairs(urls, model_name, args))
        print(f"\n{model_name}, {args.max_tokens} tokens/answer, {args.rounds} rounds of {args.requests} paired "
              f"sequential requests + {args.streams} concurrent streams per server:")
        print(f"{'metric':28s} {'plain':>10s} {'Ray Serve':>10s} {'serve/plain':>12s} {'pairs: median (min..max)':>26s}")
        for key, label in (("ttft_ms", "TTFT ms (batch 1)"), ("tok_s", "decode tok/s (batch 1)"),
                           ("agg_tok_s", f"tok/s, {args.streams} streams")):
            p, s = runs[f"plain_{key}"], runs[f"serve_{key}"]
            ratios = [b / a for a, b in zip(p, s)]
            print(f"{label:28s} {statistics.median(p):10.1f} {statistics.median(s):10.1f} "
                  f"{statistics.median(s) / statistics.median(p):11.2f}x {statistics.median(ratios):12.2f}x "
                  f"({min(ratios):.2f}..{max(ratios):.2f})")
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        plain.terminate()
        plain.wait(timeout=30)


def bench_embed(args: argparse.Namespace, folder: Path) -> None:
    import ray

    from realizar_ort.config import EmbeddingModelConfig, SessionConfig
    from realizar_ort.embeddings.batch import run_local_job
    from realizar_ort.embeddings.engine import EmbeddingEngine
    from realizar_ort.embeddings.job import JobSpec
    from realizar_ort.embeddings.ray_job import run_ray_job

    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing".split()
    path = folder / "rows.jsonl"
    with path.open("w") as f:
        for i in range(args.rows):
            text = " ".join(words[(i * 7 + k) % len(words)] for k in range(6 + i % 20))
            f.write(json.dumps({"text": f"{i}: {text}"}) + "\n")

    def spec(out: str) -> JobSpec:
        return JobSpec(path, folder / out, "jsonl", "text", None, "skip", 32, 500)

    started = time.perf_counter()
    config = EmbeddingModelConfig(path=args.embedder, session=SessionConfig(intra_op_threads=2))
    with EmbeddingEngine.from_folder(args.embedder, config) as engine:
        local = run_local_job(spec("local"), engine, progress_bar=False)
    local_s = time.perf_counter() - started
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        started = time.perf_counter()
        remote = run_ray_job(spec("ray"), EmbeddingModelConfig(path=args.embedder,
                                                               session=SessionConfig(intra_op_threads=1)),
                             concurrency=2)
        ray_s = time.perf_counter() - started
    finally:
        ray.shutdown()
    assert local.rows_embedded == remote.rows_embedded == args.rows
    print(f"\nembed job, {args.rows} rows of JSONL (MiniLM), whole job incl. model load:")
    print(f"  local (1 process, 2 threads): {args.rows / local_s:7.1f} rows/s ({local_s:.1f} s)")
    print(f"  Ray Data (2 actors x 1 thread): {args.rows / ray_s:7.1f} rows/s ({ray_s:.1f} s, "
          f"ray.init not included)  ratio ray/local {local_s / ray_s:.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "smollm2-135m-instruct")
    parser.add_argument("--embedder", type=Path, default=REPO / "models" / "all-minilm-l6-v2")
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--skip-embed", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="realizar-ray-bench-") as tmp:
        if not args.skip_serve:
            bench_serve(args, Path(tmp))
        if not args.skip_embed:
            bench_embed(args, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
