"""What Ray costs us, same run, same machine: Ray Serve's proxy vs the plain server, and the Ray Data embed
job vs the local one.

    flock /work/bench.lock .venv/bin/python bench/ray_overhead.py [--model models/smollm2-135m-instruct]
        [--requests 4] [--max-tokens 64] [--streams 4] [--rounds 4] [--rows 3000] [--ingress haproxy|proxy]
        [--ray-env KEY=VALUE ...] [--order balanced|rotate] [--skip-serve] [--skip-embed]

Serving: the same config served by ``realizar-ort serve`` (uvicorn, a child process) and by a Ray Serve
deployment with one replica (``realizar_ort.server.ray_serve``, on a local ``ray.init(num_cpus=2)``), whose
ingress is ``--ingress`` (``[server.ray] ingress``). With HAProxy (the default) the same replica is also
timed through its own HTTP port (``replica``: Serve's direct ingress, no HAProxy) and through Serve's Python
proxy (``serve_proxy``: the fallback proxy Serve runs beside HAProxy), which splits the overhead. Each
round sends ``requests`` streaming requests to every server, interleaved one by one in a balanced order
(every server follows every server equally often: on 2 cores a request right after another process's is
slower, which a fixed rotation charges to one server; TTFT and decode tokens/s measured at the client from
the SSE events; ``ignore_eos`` fixes every answer at
``max-tokens``), then ``streams`` concurrent streams to each (aggregate tokens/s). Reported: medians, their
ratio to plain, and the median and range of the per-request (per-round) ratios; target: within 10%.
Then a TTFT split (client TTFT vs the app's own, from its /metrics histogram) and the CPU that Ray's own
processes use, idle and during the runs.

Embedding: ``rows`` sentences embedded by the local job (one process, 2 threads) and by the Ray Data job
(2 actors, 1 thread each); rows/s over the whole job, start-up included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
PLAIN_PORT, SERVE_PORT, FALLBACK_PORT, DIRECT_PORT = 18621, 18620, 18622, 18624
PROMPTS = ["What is the capital of France?", "Name a primary colour.", "What do bees make?",
           "Which planet is the largest?", "Say hello in Spanish.", "What is 2 + 2?"]


def write_config(folder: Path, model: Path, port: int, ingress: str = "haproxy") -> Path:
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
ingress = "{ingress}"
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


def serving_pids(plain_pid: int) -> dict[str, list[int]]:
    """The processes that serve each endpoint (their CPU per token is the overhead a busy machine hides)."""
    import psutil

    by_name: dict[str, list[int]] = {}
    for proc in psutil.process_iter(["name"]):
        name = proc.info["name"] or ""
        for key in ("ServeRepli", "haproxy", "ProxyActor"):
            if key in name:
                by_name.setdefault(key, []).append(proc.pid)
    replica = by_name.get("ServeRepli", [])
    return {"plain": [plain_pid], "serve": replica + by_name.get("haproxy", []), "replica": replica,
            "serve_proxy": replica + by_name.get("ProxyActor", [])}


def cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            pass
    return total


def balanced_order(names: list[str]) -> list[str]:
    """A cycle of ``len(names)**2`` requests in which every server follows every server (itself included)
    exactly once: a de Bruijn sequence of order 2. On this 2-core machine a request is slower right after a
    request to *another* server process (that process's leftover work competes with this one's prefill), so a
    fixed rotation (plain, serve, replica, serve_proxy) would charge that to whichever server always comes
    second."""
    n = len(names)
    a = [0] * (2 * n)
    seq: list[int] = []

    def db(t: int, p: int) -> None:  # the standard recursive construction (Lyndon words)
        if t > 2:
            if 2 % p == 0:
                seq.extend(a[1:p + 1])
            return
        a[t] = a[t - p]
        db(t + 1, p)
        for j in range(a[t - p] + 1, n):
            a[t] = j
            db(t + 1, t)

    db(1, 1)
    return [names[i] for i in seq]


async def measure_rounds(urls: dict[str, str], model: str, args: argparse.Namespace,
                         pids: dict[str, list[int]] | None = None) -> dict[str, list[float]]:
    """Interleaved runs, request by request, so drift on a shared machine hits every server alike: per-request
    TTFT and batch-1 decode tok/s (in :func:`balanced_order`, continued across rounds), and the aggregate tok/s
    of ``streams`` concurrent streams (the order of the servers rotates each round). ``ttft_ms_after_<name>``
    keeps each TTFT by the server asked just before."""
    out: dict[str, list[float]] = {f"{name}_{key}": [] for name in urls
                                   for key in ("ttft_ms", "tok_s", "agg_tok_s", "cpu_ms_per_token")}
    names = list(urls)
    order = balanced_order(names) if args.order == "balanced" else [  # "rotate": the order this bench used before
        name for turn in range(1, len(names) + 1) for name in names[turn % len(names):] + names[:turn % len(names)]]
    async with httpx.AsyncClient(timeout=300) as client:
        for url in urls.values():
            await one_stream(client, url, model, "warm up", 4)
        k = 0
        previous = names[-1]
        deadline = time.monotonic() + args.budget_s
        for r in range(args.rounds):
            if r and time.monotonic() > deadline:
                print(f"  stopping after {r} rounds: --budget-s {args.budget_s:.0f} spent", flush=True)
                break
            for _ in range(args.requests * len(names)):
                name = order[k % len(order)]
                prompt = PROMPTS[len(out[f"{name}_ttft_ms"]) % len(PROMPTS)]  # every server gets the same prompts
                ttft, decode, tokens = await one_stream(client, urls[name], model, prompt, args.max_tokens)
                k += 1
                out[f"{name}_ttft_ms"].append(1000 * ttft)
                out.setdefault(f"{name}_ttft_ms_after_{previous}", []).append(1000 * ttft)
                out[f"{name}_tok_s"].append((tokens - 1) / decode)
                previous = name
            for name in names[r % len(names):] + names[:r % len(names)]:
                cpu = cpu_seconds(pids.get(name, [])) if pids else 0.0
                started = time.perf_counter()
                results = await asyncio.gather(*(one_stream(client, urls[name], model, PROMPTS[k % len(PROMPTS)],
                                                            args.max_tokens) for k in range(args.streams)))
                out[f"{name}_agg_tok_s"].append(sum(x[2] for x in results) / (time.perf_counter() - started))
                cpu = (cpu_seconds(pids.get(name, [])) if pids else 0.0) - cpu
                out[f"{name}_cpu_ms_per_token"].append(1000 * cpu / sum(x[2] for x in results))
            previous = names[(r - 1) % len(names)]  # the last of the 4-stream runs
            print(f"  round {r}: " + ", ".join(f"{n}_{key} {out[f'{n}_{key}'][-1]:.1f}" for n in names
                                                for key in ("ttft_ms", "tok_s", "agg_tok_s")), flush=True)
    return out


def ttft_histogram(text: str) -> tuple[float, float]:
    """(sum, count) of the server's own TTFT histogram (request arrival at the app to first token)."""
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("realizar_time_to_first_token_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("realizar_time_to_first_token_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


async def timeline(urls: dict[str, str], model: str, args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    """Where one request's TTFT goes, per server: (client TTFT ms, the app's own TTFT ms) of each of
    ``2 * len(urls)`` sequential requests per server, in :func:`balanced_order` (the app's own from its /metrics
    histogram, read before and after each request); the difference is the way in and the first event's way
    out."""
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in urls}
    async with httpx.AsyncClient(timeout=300) as client:
        for name in balanced_order(list(urls)) * 2:
            metrics_url = (urls["plain"] if name == "plain" else urls["serve"]) + "/metrics"
            before = ttft_histogram((await client.get(metrics_url)).text)
            prompt = PROMPTS[len(out[name]) % len(PROMPTS)]
            ttft = (await one_stream(client, urls[name], model, prompt, 8))[0]
            after = ttft_histogram((await client.get(metrics_url)).text)
            if after[1] - before[1] == 1:  # else a health check's or another request's observation slipped in
                out[name].append((1000 * ttft, 1000 * (after[0] - before[0])))
    return out


def ray_cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by each of Ray's own processes on this machine (replicas excluded)."""
    import psutil

    out: dict[str, float] = {}
    for proc in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        try:
            name = proc.info["name"] or ""
            cmd = " ".join(proc.info["cmdline"] or ())
            if "ServeReplica" in name or "ServeRepli" in name:
                continue
            for key in ("haproxy", "HAProxyMan", "ProxyActor", "ServeContr", "DashboardA", "RuntimeEnv", "raylet",
                        "gcs_server", "log_monitor", "monitor.py", "dashboard.py", "idle"):
                if key in name or key in cmd:
                    times = proc.info["cpu_times"]
                    out[key] = out.get(key, 0.0) + times.user + times.system
                    break
        except Exception:  # noqa: BLE001 - a process that ended meanwhile
            continue
    return out


def bench_serve(args: argparse.Namespace, folder: Path) -> None:
    import ray

    model_name = args.model.name
    plain = subprocess.Popen([sys.executable, "-m", "realizar_ort", "serve", "--config",
                              str(write_config(folder, args.model, PLAIN_PORT))],
                             stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "2"})
    from realizar_ort.config import load_config

    config = load_config(write_config(folder, args.model, SERVE_PORT, args.ingress))
    # Ray's processes read these when they start; ports kept inside this bench's range
    env = {"RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(FALLBACK_PORT),
           "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(DIRECT_PORT),
           "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(DIRECT_PORT + 1),
           "RAY_SERVE_HAPROXY_STATS_PORT": str(DIRECT_PORT + 2), "RAY_SERVE_HAPROXY_METRICS_PORT": str(DIRECT_PORT + 3)}
    from realizar_ort.server import ray_serve

    extra = dict(kv.split("=", 1) for kv in args.ray_env)
    os.environ.update({**env, **ray_serve.ray_env(config), **extra})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray_serve.deploy(config)
        urls = {"plain": f"http://127.0.0.1:{PLAIN_PORT}", "serve": f"http://127.0.0.1:{SERVE_PORT}"}
        if args.ingress == "haproxy":  # the same replica reached two more ways, to split the overhead
            urls["replica"] = f"http://127.0.0.1:{DIRECT_PORT}"
            urls["serve_proxy"] = f"http://127.0.0.1:{FALLBACK_PORT}"
        for url in urls.values():
            wait_ready(url)
        time.sleep(5)
        idle_before, started = ray_cpu_seconds(), time.perf_counter()
        time.sleep(10)
        idle = {k: (v - idle_before.get(k, 0.0)) / (time.perf_counter() - started) for k, v in ray_cpu_seconds().items()}
        before, started = ray_cpu_seconds(), time.perf_counter()
        runs = asyncio.run(measure_rounds(urls, model_name, args, serving_pids(plain.pid)))
        busy = {k: (v - before.get(k, 0.0)) / (time.perf_counter() - started) for k, v in ray_cpu_seconds().items()}
        steps = asyncio.run(timeline(urls, model_name, args))
        print(f"\n{model_name}, {args.max_tokens} tokens/answer, {len(runs['plain_agg_tok_s'])} rounds of {args.requests} interleaved "
              f"sequential requests ({args.order} order) + {args.streams} concurrent streams per server; serve = Ray Serve's ingress "
              f"({args.ingress}{', ' + ' '.join(args.ray_env) if args.ray_env else ''}), replica = the replica's "
              f"own port, serve_proxy = Serve's Python proxy:")
        print(f"{'metric':28s} {'server':>12s} {'median':>9s} {'x plain':>8s} {'per round: median (min..max)':>30s}")
        for key, label in (("ttft_ms", "TTFT ms (batch 1)"), ("tok_s", "decode tok/s (batch 1)"),
                           ("agg_tok_s", f"tok/s, {args.streams} streams"),
                           ("cpu_ms_per_token", f"CPU ms/token, {args.streams} str.")):
            p = runs[f"plain_{key}"]
            for name in urls:
                s = runs[f"{name}_{key}"]
                ratios = [b / a for a, b in zip(p, s)]
                print(f"{label:28s} {name:>12s} {statistics.median(s):9.1f} {statistics.median(s) / statistics.median(p):7.2f}x "
                      f"{statistics.median(ratios):12.2f}x ({min(ratios):.2f}..{max(ratios):.2f})")
        print("TTFT by the server asked just before (median ms, n): a request right after another server process's "
              "is slower on 2 cores")
        for name in urls:
            print(f"  {name:>12s}: " + ", ".join(
                f"after {prev} {statistics.median(v):.1f} ({len(v)})" for prev in urls
                if (v := runs.get(f"{name}_ttft_ms_after_{prev}"))))
        print("TTFT, where it goes (medians over requests in balanced order, ms): client = app's own TTFT "
              "(arrival at the app -> first token) + the way in and out")
        for name, pairs in steps.items():
            if pairs:
                print(f"  {name:>12s}: client {statistics.median(c for c, _ in pairs):6.1f} = app "
                      f"{statistics.median(a for _, a in pairs):6.1f} + transport "
                      f"{statistics.median(c - a for c, a in pairs):6.1f}  (n={len(pairs)})")
        print("Ray's own processes, % of one core (idle 10 s | during the runs): " + ", ".join(
            f"{k} {100 * idle.get(k, 0):.0f}|{100 * busy.get(k, 0):.0f}" for k in sorted(busy)))
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
    parser.add_argument("--budget-s", type=float, default=330.0,
                        help="start no new round after this many seconds of serving rounds (a busy machine)")
    parser.add_argument("--ingress", choices=("haproxy", "proxy"), default="haproxy",
                        help="Ray Serve's ingress ([server.ray] ingress); haproxy also times the replica's own port "
                             "and Serve's Python proxy")
    parser.add_argument("--ray-env", action="append", default=[], metavar="KEY=VALUE",
                        help="more environment for Ray's processes (e.g. RAY_SERVE_THROUGHPUT_OPTIMIZED=1)")
    parser.add_argument("--order", choices=("balanced", "rotate"), default="balanced",
                        help="the order of the sequential requests: balanced (every server follows every server "
                             "equally often) or rotate (plain, serve, replica, serve_proxy, rotated by one each pass: "
                             "serve mostly follows plain)")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--skip-embed", action="store_true")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `timeout`: still stop Ray and the plain server
    with tempfile.TemporaryDirectory(prefix="realizar-ray-bench-") as tmp:
        if not args.skip_serve:
            bench_serve(args, Path(tmp))
        if not args.skip_embed:
            bench_embed(args, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
