"""Grammar fast-forward on vs off, side by side in one process: tool calls, json_schema answers, free text.

    flock /work/bench.lock .venv/bin/python bench/fast_forward.py [--models smollm2-135m-instruct,tiny-llama3]
        [--streams 1,8] [--requests 2] [--rounds 2] [--max-tokens 96]

Workloads (the engine in-process, no HTTP; N streams = N threads, each one request at a time):
- ``tool``: ``generate_with_tools`` with the 3-function schema of ``bench/grammar.py`` (get_weather,
  search_web, send_email), ``tool_choice="required"``;
- ``json``: a ``json_schema`` answer to the nested schema of ``bench/grammar.py`` (a ``JsonGrammar`` with the
  engine's ``ForcedTokenizer``, as the server builds it);
- ``free``: plain text (``ignore_eos``, fixed length): fast-forward has nothing to do there and must cost nothing.

Each cell runs fast-forward off and on (``SamplingParams.fast_forward``), alternating which goes first each
round, greedy. Reported per cell (medians over rounds): output tokens/s (completion tokens / wall time),
end-to-end latency per request, the share of output tokens forced, the model passes per output token, and
validity (finished answers that parse and validate / finished answers; answers cut at ``max_tokens`` are
counted apart), for json answers the forced runs (deltas of several tokens) that are not the tokenizer's own
tokens for their text, and the sampled tokens a forced run replaced (token healing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import jsonschema

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from grammar import NESTED, TOOLS  # noqa: E402

from realizar_ort.config import LlmModelConfig  # noqa: E402
from realizar_ort.generation.engine import ModelEngine  # noqa: E402
from realizar_ort.generation.results import GenerationResult  # noqa: E402
from realizar_ort.generation.sampling import SamplingParams  # noqa: E402
from realizar_ort.grammar.forced import ForcedTokenizer  # noqa: E402
from realizar_ort.grammar.matcher import JsonGrammar, TokenVocabulary, compile_json_schema  # noqa: E402
from realizar_ort.tools.generate import generate_with_tools  # noqa: E402

OPENAI_TOOLS = [{"type": "function", "function": {"name": b["properties"]["name"]["const"],
                                                  "parameters": b["properties"]["arguments"]}}
                for b in TOOLS["anyOf"]]
TOOL_PROMPTS = ["What is the weather in Paris?", "Search the web for the tallest building.",
                "Email ada@example.com that the report is late.", "Is it raining in Oslo?",
                "Find three recipes with lentils.", "Tell bob@example.com the meeting moved to 3pm.",
                "Weather in Tokyo in fahrenheit please.", "Look up the population of Peru."]
JSON_PROMPTS = ["Create a task for fixing the login page.", "Make a ticket about slow search results.",
                "File an issue: the logo is blurry.", "Track the migration to the new database.",
                "A task to write the release notes.", "Ticket: flaky test in the payments suite.",
                "Create an issue for updating dependencies.", "A blocked task waiting on design review."]
FREE_PROMPTS = ["Tell me about the sea.", "Describe a forest in autumn.", "Why is the sky blue?",
                "What do cats like?", "Explain rain to a child.", "Write about mountains.",
                "What is a library?", "Describe a busy market."]


class Cell:
    def __init__(self) -> None:
        self.tokens = 0
        self.latencies: list[float] = []
        self.finished = 0
        self.valid = 0
        self.cut = 0
        self.runs = 0  # forced runs checked (json answers)
        self.noncanonical = 0


def _one(engine: ModelEngine, kind: str, i: int, ff: bool, max_tokens: int, forcer, vocab, cell: Cell,
         lock: threading.Lock) -> None:
    t = time.perf_counter()
    if kind == "tool":
        params = SamplingParams(max_tokens=max_tokens, temperature=0, fast_forward=ff)
        r = generate_with_tools(engine, [{"role": "user", "content": TOOL_PROMPTS[i % 8]}], OPENAI_TOOLS,
                                "required", params=params)
        tokens, finish = r.usage.completion_tokens, r.finish_reason
        ok = finish == "tool_calls" and len(r.tool_calls) == 1 and r.tool_calls[0].arguments is not None
        if ok:
            schema = next(t["function"]["parameters"] for t in OPENAI_TOOLS
                          if t["function"]["name"] == r.tool_calls[0].name)
            jsonschema.validate(r.tool_calls[0].arguments, schema)
        done = finish != "length"
    else:
        processors = ()
        if kind == "json":
            processors = (JsonGrammar(compile_json_schema(NESTED, vocab), forcer),)
        params = SamplingParams(max_tokens=max_tokens, temperature=0, fast_forward=ff, logit_processors=processors,
                                ignore_eos=kind == "free")
        prompts = JSON_PROMPTS if kind == "json" else FREE_PROMPTS
        with engine.chat_stream([{"role": "user", "content": prompts[i % 8]}], params) as stream:
            deltas = list(stream)
        r = GenerationResult.fold(iter(deltas))
        for d in deltas:  # a delta of several tokens is a forced run: it must be the tokenizer's own tokens
            ids = [t for t in d.token_ids if t not in engine.eos_token_ids]
            if len(d.token_ids) > 1 and ids:
                spelled = forcer.spell(ids)
                canonical = spelled is not None and engine.tokenizer.encode(spelled.decode("utf-8", "replace")) == ids
                with lock:
                    cell.runs += 1
                    cell.noncanonical += not canonical
        tokens, finish = r.usage.completion_tokens, r.finish_reason
        done = finish != "length"
        ok = True
        if kind == "json" and done:
            try:
                jsonschema.validate(json.loads(r.text), NESTED,
                                    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
            except (ValueError, jsonschema.ValidationError):
                ok = False
    elapsed = time.perf_counter() - t
    with lock:
        cell.tokens += tokens
        cell.latencies.append(elapsed)
        if kind == "free":
            return
        if done:
            cell.finished += 1
            cell.valid += ok
        else:
            cell.cut += 1


def run_cell(engine, kind, streams, requests, ff, max_tokens, forcer, vocab) -> tuple[Cell, float, dict]:
    cell, lock = Cell(), threading.Lock()
    before = engine.stats()

    def client(c: int) -> None:
        for k in range(requests):
            _one(engine, kind, c * requests + k, ff, max_tokens, forcer, vocab, cell, lock)

    t = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(streams)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    after = engine.stats()
    delta = {k: after[k] - before[k] for k in ("forced_tokens", "generated_tokens", "decode_steps",
                                                "model_steps_saved", "prefill_passes", "forced_passes",
                                                "healed_tokens")}
    return cell, wall, delta


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2-135m-instruct,tiny-llama3")
    ap.add_argument("--kinds", default="tool,json,free")
    ap.add_argument("--streams", default="1,8")
    ap.add_argument("--requests", type=int, default=2, help="requests per stream per run (1 stream)")
    ap.add_argument("--stream-requests", type=int, default=1,
                    help="requests per stream per run with several streams (more keeps the batch full to the end: "
                         "answers of different lengths on and off then weigh less on tok/s)")
    ap.add_argument("--healing", action="store_true", help="token healing at forced runs' starts (else the model "
                    "picks a run's first token after a sampled one: the default)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--free-tokens", type=int, default=32)
    args = ap.parse_args()
    print("model | workload | streams | ff | tok/s | e2e p50 s | forced share | passes/token | valid | cut | "
          "non-canonical runs | healed | own passes | ratio on/off tok/s")
    for model in args.models.split(","):
        folder = REPO / "models" / model
        engine = ModelEngine.from_folder(folder, LlmModelConfig(path=folder, max_batch_size=8,
                                                                fast_forward_healing=args.healing))
        vocab = TokenVocabulary.from_tokenizer_file(folder / "tokenizer.json", vocab_size=engine.vocab_size,
                                                    stop_token_ids=tuple(sorted(engine.eos_token_ids)))
        forcer = ForcedTokenizer(vocab, engine.tokenizer, healing=args.healing)
        run_cell(engine, "json", 1, 1, True, 8, forcer, vocab)  # warm-up: kernels, grammar, vocabulary
        run_cell(engine, "tool", 1, 1, True, 8, forcer, vocab)
        for kind in args.kinds.split(","):
            for streams in (int(s) for s in args.streams.split(",")):
                max_tokens = args.free_tokens if kind == "free" else args.max_tokens
                requests = args.requests if streams == 1 else args.stream_requests
                results: dict[bool, list] = {False: [], True: []}
                for rnd in range(args.rounds):
                    for ff in ((False, True) if rnd % 2 == 0 else (True, False)):
                        results[ff].append(run_cell(engine, kind, streams, requests, ff, max_tokens, forcer, vocab))
                rates = {}
                for ff in (False, True):
                    runs = results[ff]
                    rates[ff] = [c.tokens / w for c, w, _ in runs]
                    lat = statistics.median(x for c, _, _ in runs for x in c.latencies)
                    gen = sum(d["generated_tokens"] for _, _, d in runs)
                    forced = sum(d["forced_tokens"] for _, _, d in runs) / max(gen, 1)
                    passes = sum(d["decode_steps"] + d["prefill_passes"] + d["forced_passes"] for _, _, d in runs) / max(gen, 1)
                    fin = sum(c.finished for c, _, _ in runs)
                    valid = sum(c.valid for c, _, _ in runs)
                    cut = sum(c.cut for c, _, _ in runs)
                    canon = f"{sum(c.noncanonical for c, _, _ in runs)}/{sum(c.runs for c, _, _ in runs)}" if kind == "json" else "-"
                    healed = sum(d["healed_tokens"] for _, _, d in runs)
                    own = sum(d["forced_passes"] for _, _, d in runs)  # forced runs fed in a pass of their own
                    ratio = ""
                    if ff:
                        pairs = [a / b for a, b in zip(rates[True], rates[False])]
                        ratio = f"{statistics.median(pairs):.2f}x ({min(pairs):.2f}-{max(pairs):.2f})"
                    vtxt = "-" if kind == "free" else f"{valid}/{fin}"
                    print(f"{model} | {kind} | {streams} | {'on' if ff else 'off'} | {statistics.median(rates[ff]):.1f}"
                          f" | {lat:.2f} | {forced:.0%} | {passes:.2f} | {vtxt} | {cut} | {canon} | {healed} | {own} | {ratio}", flush=True)
        engine.close()


if __name__ == "__main__":
    main()
