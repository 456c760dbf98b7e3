"""Load generator for the OpenAI-compatible server, on loopback, against the engine's own throughput.

    .venv/bin/python bench/server_load.py [--model models/smollm2-135m-instruct] [--clients 1,8,32]
        [--requests 2] [--max-tokens 32] [--json-share 0,0.5]
    .venv/bin/python bench/server_load.py --json-cost [--clients 1,8,32] [--requests 1] [--max-tokens 32]
        [--repeat 3]

For each (clients, json share): starts N concurrent clients (the official ``AsyncOpenAI`` client, one
streaming request at a time each, ``requests`` requests per client), and reports requests/s, aggregate
generated tokens/s, time to first token p50/p99 and inter-token latency p50/p99 (measured at the client,
per content chunk). ``ignore_eos`` fixes every answer at ``max-tokens`` so runs are comparable. Then the
same workload straight on ``ModelEngine`` from N threads (no HTTP) gives the engine's batched throughput;
the ratio server/engine is what HTTP, JSON and SSE cost.

The server runs in a child process (``realizar-ort serve``) so the load generator does not share its GIL.
Keep runs short on a shared machine; ``--repeat`` alternates the HTTP and engine runs of each cell and
reports medians (and the median of the per-pair ratios), which tames a noisy machine.

``--json-cost`` measures what ``json_schema`` costs like for like (issue 7: <= 5% of throughput). The table
above cannot show it: there a JSON answer stops once its value is complete while plain answers run to
``max-tokens``. In this mode every request (plain and JSON) sets ``ignore_eos`` and the JSON schema
(``LONG_LIST``: an object holding >= 64 strings) cannot be completed within ``max-tokens``, so every answer is
exactly ``max-tokens`` tokens long with ``finish_reason == "length"`` (checked per request; a mismatch is
reported and fails the run). For each client count and round it runs plain-only, JSON-only and a 50% mix
over HTTP, rotating their order each round, and reports medians over rounds of tokens/s, the cost
``1 - json tok/s / plain tok/s`` (median of the per-round pairs, with its min..max), the spread of the runs,
and the server's grammar mask time per token (``realizar_grammar_mask_seconds`` sum/count from /metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import openai

REPO = Path(__file__).resolve().parent.parent
PROMPTS = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?", "Say hello in Spanish.",
           "What do bees make?", "Which planet is the largest?", "What is the boiling point of water?",
           "Write one word that rhymes with cat."]
PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40},
                                           "age": {"type": "integer"}, "city": {"type": "string", "maxLength": 40}},
          "required": ["name", "age", "city"], "additionalProperties": False}
# A schema whose instances cannot finish within a short max_tokens (>= 64 strings): JSON answers run to max_tokens.
LONG_LIST = {"type": "object", "properties": {"items": {"type": "array", "items": {"type": "string", "maxLength": 40},
                                                        "minItems": 64}},
             "required": ["items"], "additionalProperties": False}


@dataclass
class Cell:
    requests: int = 0
    tokens: int = 0
    wall: float = 0.0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)
    completions: list[tuple[bool, int, str | None]] = field(default_factory=list)  # (json?, tokens, finish_reason)

    def row(self) -> dict[str, float]:
        def pct(xs: list[float], q: float) -> float:
            return float(np.percentile(xs, q)) * 1000 if xs else float("nan")

        return {"req/s": self.requests / self.wall, "tok/s": self.tokens / self.wall,
                "ttft_p50_ms": pct(self.ttft, 50), "ttft_p99_ms": pct(self.ttft, 99),
                "itl_p50_ms": pct(self.itl, 50), "itl_p99_ms": pct(self.itl, 99)}


def is_json(i: int, share: float) -> bool:
    """Deterministic interleaving: request i uses json_schema for a `share` fraction of requests."""
    return share > 0 and int((i + 1) * share) > int(i * share)


# ---- through HTTP -------------------------------------------------------------------------------------------


async def http_cell(url: str, model: str, clients: int, per_client: int, max_tokens: int, share: float,
                    schema: dict = PERSON, json_ignore_eos: bool = False) -> Cell:
    """One run over HTTP. Plain requests always set ``ignore_eos``; JSON ones use ``schema`` and set it only
    when ``json_ignore_eos`` (the default table lets JSON answers stop once the value is complete)."""
    cell = Cell()
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600) as client:

        async def one(i: int) -> None:
            extra: dict = {}
            as_json = is_json(i, share)
            if as_json:
                extra["response_format"] = {"type": "json_schema",
                                            "json_schema": {"name": "bench", "schema": schema, "strict": True}}
            start = time.perf_counter()
            last = None
            tokens, finish = 0, None
            stream = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], temperature=0,
                max_tokens=max_tokens, stream=True, stream_options={"include_usage": True},
                extra_body={"ignore_eos": json_ignore_eos or not as_json}, **extra)
            async for chunk in stream:
                now = time.perf_counter()
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
                    cell.tokens += tokens
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
                if chunk.choices and chunk.choices[0].delta.content:
                    if last is None:
                        cell.ttft.append(now - start)
                    else:
                        cell.itl.append(now - last)
                    last = now
            cell.requests += 1
            cell.completions.append((as_json, tokens, finish))

        async def worker(w: int) -> None:
            for k in range(per_client):
                await one(w * per_client + k)

        start = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        cell.wall = time.perf_counter() - start
    return cell


# ---- straight on the engine ---------------------------------------------------------------------------------


def engine_cell(engine, clients: int, per_client: int, max_tokens: int, share: float, json_mode) -> Cell:
    from realizar_ort.server.protocol import JsonSchemaFormat

    from realizar_ort.generation.sampling import SamplingParams

    cell = Cell()
    lock = threading.Lock()
    fmt = JsonSchemaFormat("json_schema", schema=PERSON, name="person", strict=True)

    def one(i: int) -> None:
        processors = (json_mode.processor(fmt),) if is_json(i, share) else ()
        params = SamplingParams(max_tokens=max_tokens, temperature=0, logit_processors=processors,
                                ignore_eos=not is_json(i, share))
        start = time.perf_counter()
        last = None
        ttft, itl, tokens = [], [], 0
        for delta in engine.chat_stream([{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], params):
            now = time.perf_counter()
            tokens += len(delta.token_ids) - delta.replaces  # a healed token replaces one counted before
            if delta.text:
                (ttft if last is None else itl).append(now - (start if last is None else last))
                last = now
        with lock:
            cell.requests += 1
            cell.tokens += tokens
            cell.ttft += ttft
            cell.itl += itl

    def worker(w: int) -> None:
        for k in range(per_client):
            one(w * per_client + k)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cell.wall = time.perf_counter() - start
    return cell


# ---- json_schema cost, like for like (--json-cost) ----------------------------------------------------------

COST_KINDS = (("plain", 0.0), ("json", 1.0), ("mix", 0.5))


def mask_totals(url: str) -> tuple[float, float]:
    """(sum seconds, count) of the server's ``realizar_grammar_mask_seconds`` histogram."""
    total = count = 0.0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("realizar_grammar_mask_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("realizar_grammar_mask_seconds_count"):
            count = float(line.split()[-1])
    return total, count


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) from /proc: less sensitive than wall time
    to other work on a shared machine (Linux only; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def length_mismatches(cell: Cell, max_tokens: int) -> list[tuple[bool, int, str | None]]:
    """Completions that did not run to exactly ``max_tokens`` with ``finish_reason == "length"``."""
    return [c for c in cell.completions if c[1] != max_tokens or c[2] != "length"]


def json_cost(url: str, model: str, pid: int, clients: list[int], per_client: int, max_tokens: int,
              rounds: int) -> int:
    """Plain-only, JSON-only and 50% mix runs of identical length, rotated each round; prints one row per
    client count with wall-clock tokens/s and the server process's CPU ms per token (``pid``). Returns 1
    when any answer was not exactly ``max_tokens`` long (the comparison is void)."""
    rows = []
    bad = 0
    for n in clients:
        per = per_client if n * per_client >= 2 else 2  # a 50% mix needs at least two requests
        runs: dict[str, list[float]] = {kind: [] for kind, _ in COST_KINDS}
        cpu: dict[str, list[float]] = {kind: [] for kind, _ in COST_KINDS}  # server CPU ms per token
        mask_us: list[float] = []
        mask_share: list[float] = []  # JSON-only runs: grammar mask seconds / wall seconds
        loads: list[float] = []
        for r in range(rounds):
            order = COST_KINDS[r % 3:] + COST_KINDS[:r % 3]
            for kind, share in order:
                before, cpu_before = mask_totals(url), cpu_seconds(pid)
                cell = asyncio.run(http_cell(url, model, n, per, max_tokens, share, LONG_LIST, True))
                after, cpu_after = mask_totals(url), cpu_seconds(pid)
                cpu[kind].append((cpu_after - cpu_before) / cell.tokens * 1000)
                tok_s = cell.tokens / cell.wall
                runs[kind].append(tok_s)
                masked = after[1] - before[1]
                json_tokens = sum(t for j, t, _ in cell.completions if j)
                if kind == "json" and masked:
                    mask_us.append((after[0] - before[0]) / masked * 1e6)
                    mask_share.append((after[0] - before[0]) / cell.wall)
                wrong = length_mismatches(cell, max_tokens)
                bad += len(wrong)
                loads.append(os.getloadavg()[0])
                print(f"round {r + 1} clients={n} {kind}: {tok_s:.1f} tok/s, {cpu[kind][-1]:.1f} CPU ms/token, "
                      f"{cell.tokens} tokens "
                      f"({json_tokens} JSON, {masked:.0f} masks) in {cell.wall:.2f} s, "
                      f"{len(cell.completions)} requests, off-length {wrong or 'none'}, load {loads[-1]:.1f}",
                      flush=True)
        costs = [1 - j / p for p, j in zip(runs["plain"], runs["json"], strict=True)]
        mix_costs = [1 - m / p for p, m in zip(runs["plain"], runs["mix"], strict=True)]
        cpu_costs = [j / p - 1 for p, j in zip(cpu["plain"], cpu["json"], strict=True)]
        rows.append((n, runs, costs, mix_costs, mask_us, loads, cpu, cpu_costs, mask_share))
    print()
    head = ("clients", "plain tok/s", "json tok/s", "mix tok/s", "json cost", "json cost min..max", "mix cost",
            "rounds", "run spread plain/json/mix", "CPU ms/token plain/json", "CPU cost", "CPU cost min..max",
            "mask us/token", "mask % of wall", "load avg")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    med = lambda xs: float(np.median(xs)) if xs else float("nan")  # noqa: E731
    spread = lambda xs: (max(xs) / min(xs) - 1) * 100 if xs and min(xs) > 0 else float("nan")  # noqa: E731
    for n, runs, costs, mix_costs, mask_us, loads, cpu, cpu_costs, mask_share in rows:
        print(f"| {n} | {med(runs['plain']):.1f} | {med(runs['json']):.1f} | {med(runs['mix']):.1f} | "
              f"{med(costs):+.1%} | {min(costs):+.1%}..{max(costs):+.1%} | {med(mix_costs):+.1%} | {len(costs)} | "
              f"{spread(runs['plain']):.0f}%/{spread(runs['json']):.0f}%/{spread(runs['mix']):.0f}% | "
              f"{med(cpu['plain']):.1f}/{med(cpu['json']):.1f} | {med(cpu_costs):+.1%} | "
              f"{min(cpu_costs):+.1%}..{max(cpu_costs):+.1%} | "
              f"{med(mask_us):.0f} | {med(mask_share):.2%} | {min(loads):.1f}-{max(loads):.1f} |")
    print(f"\nevery answer {max_tokens} tokens, finish_reason length: {'yes' if not bad else f'NO ({bad} off)'}; "
          "cost = 1 - json tok/s / plain tok/s per round (negative: JSON ran faster); CPU cost = json / plain "
          "server CPU per token - 1 per round; spread = max/min - 1 over rounds; mask % of wall = grammar mask "
          "time (serial, in the scheduler thread) / wall time of the JSON-only runs, the direct cost of the masks")
    return 1 if bad else 0


# ---- orchestration ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(model: Path, max_batch: int, threads: int) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    config = Path(tempfile.mkdtemp()) / "config.toml"
    config.write_text(
        f'[models.llm]\npath = "{model.resolve()}"\nmax_batch_size = {max_batch}\nmax_context = 1024\n'
        f'max_queued = 512\n[models.llm.session]\nintra_op_threads = {threads}\n'
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nlog_level = "warning"\n', encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "realizar_ort", "serve", "--config", str(config)], cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.2)
    return proc, url, model.name


def print_table(pairs: dict[tuple[int, float], list[tuple[Cell, Cell | None]]]) -> None:
    """One row per (clients, json share): medians over the repeats of the HTTP run and of the engine run
    that followed it, and the median of the per-pair throughput ratios."""
    head = ("clients", "json", "http req/s", "http tok/s", "engine tok/s", "http/engine", "ttft p50 ms",
            "ttft p99 ms", "itl p50 ms", "itl p99 ms", "engine itl p50 ms")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    med = lambda xs: float(np.median(xs)) if xs else float("nan")  # noqa: E731
    for (clients, share), runs in pairs.items():
        http = [h.row() for h, _ in runs]
        eng = [e.row() for _, e in runs if e is not None]
        ratios = [h.tokens / h.wall / (e.tokens / e.wall) for h, e in runs if e is not None]
        print(f"| {clients} | {share:.0%} | {med([r['req/s'] for r in http]):.2f} | {med([r['tok/s'] for r in http]):.1f} | "
              f"{med([r['tok/s'] for r in eng]):.1f} | {med(ratios):.2f}x | {med([r['ttft_p50_ms'] for r in http]):.0f} | "
              f"{med([r['ttft_p99_ms'] for r in http]):.0f} | {med([r['itl_p50_ms'] for r in http]):.1f} | "
              f"{med([r['itl_p99_ms'] for r in http]):.1f} | {med([r['itl_p50_ms'] for r in eng]):.1f} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "smollm2-135m-instruct")
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--json-share", default="0,0.5")
    parser.add_argument("--requests", type=int, default=2, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: default)")
    parser.add_argument("--repeat", type=int, default=1, help="alternate HTTP and engine runs this many times")
    parser.add_argument("--skip-engine", action="store_true")
    parser.add_argument("--json-cost", action="store_true",
                        help="measure json_schema cost like for like (plain vs JSON vs mix, equal lengths; "
                             "--repeat rounds, HTTP only)")
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    shares = [float(s) for s in args.json_share.split(",")]
    max_batch = max(clients)
    print(f"# server_load: {args.model.name}, {args.requests} request(s)/client, max_tokens {args.max_tokens}, "
          f"max_batch_size {max_batch}, {os.cpu_count()} CPUs", flush=True)

    if args.json_cost:
        proc, url, model = start_server(args.model, max_batch, args.threads)
        try:
            # warm-up: compiles the schema, and runs both kinds batched once
            asyncio.run(http_cell(url, model, 2, 1, 4, 0.5, LONG_LIST, True))
            return json_cost(url, model, proc.pid, clients, args.requests, args.max_tokens, args.repeat)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    from realizar_ort.server.json_mode import JsonModeService
    from realizar_ort.server.metrics import ServerMetrics

    from realizar_ort.config import LlmModelConfig, SessionConfig
    from realizar_ort.generation.engine import ModelEngine

    pairs: dict[tuple[int, float], list[tuple[Cell, Cell | None]]] = {}
    proc, url, model = start_server(args.model, max_batch, args.threads)
    cfg = LlmModelConfig(path=args.model, max_batch_size=max_batch, max_context=1024, max_queued=512,
                         session=SessionConfig(intra_op_threads=args.threads))
    engine = None if args.skip_engine else ModelEngine.from_config(cfg)
    try:
        asyncio.run(http_cell(url, model, 1, 1, 4, 0.5))  # warm-up (and compile the schema once)
        if engine is not None:
            spec = engine.manifest.llm
            json_mode = JsonModeService(args.model, spec.vocab_size, spec.eos_token_ids, ServerMetrics())
            engine_cell(engine, 1, 1, 4, 0.5, json_mode)
        # Each HTTP cell runs right before the same cell on the engine (idle while the other runs), so
        # both see the same machine load.
        for _ in range(args.repeat):
            for share in shares:
                for n in clients:
                    http = asyncio.run(http_cell(url, model, n, args.requests, args.max_tokens, share))
                    print(f"http clients={n} json={share:.0%}: {http.row()}", flush=True)
                    eng = None
                    if engine is not None:
                        eng = engine_cell(engine, n, args.requests, args.max_tokens, share, json_mode)
                        print(f"engine clients={n} json={share:.0%}: {eng.row()}", flush=True)
                    pairs.setdefault((n, share), []).append((http, eng))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if engine is not None:
            engine.close()
    print()
    print_table(pairs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
