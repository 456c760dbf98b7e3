"""Decode benchmark: our ModelEngine vs onnxruntime-genai and llama.cpp on the same weights, in one run.

    .venv/bin/python bench/decode.py [--model models/smollm2-135m-instruct] [--quick] [--no-memory]

Prints prefill time (30 and 500 prompt tokens), batch-1 decode tok/s, aggregate decode tok/s at 1, 4
and 16 concurrent streams, the ratios against each peer, the share of a decode step spent outside
`session.run`, and peak memory for 16 streams of 1,024 tokens. Each engine runs in its own subprocess
(this file re-invoked in a worker mode), one after the other, with the same thread count.

Peers, each skipped with the reason printed when it cannot run:
- onnxruntime-genai from a separate virtualenv (`--genai-python`, default /tmp/genai-venv/bin/python;
  it must never be installed into the project venv). It runs our exported graph through a generated
  genai_config.json (same graph, same weights: this compares the runtimes' loops; its model builder
  needs transformers 5.x and torch in that venv, so its fused graph is used only with --genai-model).
- llama.cpp through llama-cpp-python on the manifest's source GGUF (batch-1 figures only).
Timings are wall-clock medians on a shared machine: compare ratios from the same run, not absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FILLER = (
    "The quick brown fox jumps over the lazy dog while the committee reviews the quarterly report on "
    "regional water usage, noting that rainfall, reservoir levels and agricultural demand all shifted. "
)


# ---- shared helpers ---------------------------------------------------------------------------------------
def _prompt_ids(encode, n: int, salt: int = 0) -> list[int]:
    ids = encode(f"Document {salt}. " + FILLER * (n // 20 + 2))
    return ids[:n]


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _first_token(started: float, stamps: list[float]) -> float:
    return stamps[0] - started


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---- worker: our engine -----------------------------------------------------------------------------------
def worker_ours(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(REPO))
    from realizar_ort.config import LlmModelConfig, SessionConfig
    from realizar_ort.engine import ModelEngine
    from realizar_ort.sampling import SamplingParams

    config = LlmModelConfig(
        path=Path(args.model),
        max_batch_size=16,
        max_context=2048,
        max_queued=64,
        session=SessionConfig(intra_op_threads=args.threads),
    )
    engine = ModelEngine.from_config(config)
    encode = engine.tokenizer.encode
    out: dict = {"engine": "realizar-ort"}

    def first_token_seconds(ids: list[int]) -> float:
        started = time.perf_counter()
        stream = engine.generate_stream(ids, SamplingParams(max_tokens=1, temperature=0.0))
        next(stream)
        return time.perf_counter() - started

    first_token_seconds(_prompt_ids(encode, 8))  # warm-up
    out["prefill_30_ms"] = 1e3 * _median(
        [first_token_seconds(_prompt_ids(encode, 30, i)) for i in range(args.reps)]
    )
    out["prefill_500_ms"] = 1e3 * _median(
        [first_token_seconds(_prompt_ids(encode, 500, i)) for i in range(2)]
    )

    before = engine.stats()
    out["batch1_tok_s"] = _aggregate(engine, encode, 1, args.tokens)
    after = engine.stats()
    step = after["decode_step_seconds"] - before["decode_step_seconds"]
    run = after["session_run_seconds"] - before["session_run_seconds"]
    out["outside_run_share"] = (step - run) / step if step > 0 else float("nan")
    out["step_ms"] = 1e3 * step / max(1, after["decode_steps"] - before["decode_steps"])
    for n in (4, 16):
        out[f"agg{n}_tok_s"] = _aggregate(engine, encode, n, args.tokens)
    engine.close()
    return out


def _aggregate(engine, encode, streams: int, tokens: int) -> float:
    """Decode tok/s summed over `streams` concurrent requests, counted once all of them are decoding."""
    from realizar_ort.sampling import SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
    handles = [engine.generate_stream(_prompt_ids(encode, 30, 100 + i), params) for i in range(streams)]
    stamps: list[list[float]] = [[] for _ in handles]

    def consume(i: int) -> None:
        for _ in handles[i]:
            stamps[i].append(time.perf_counter())

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t0 = max(s[0] for s in stamps)  # every stream has been prefilled
    t1 = max(s[-1] for s in stamps)
    counted = sum(1 for s in stamps for t in s if t > t0)
    return counted / (t1 - t0)


def worker_memory(args: argparse.Namespace) -> dict:
    """Peak RSS for 16 concurrent streams of `--mem-tokens` tokens (prompt 30 + generated)."""
    sys.path.insert(0, str(REPO))
    from realizar_ort.config import LlmModelConfig, SessionConfig
    from realizar_ort.engine import ModelEngine
    from realizar_ort.sampling import SamplingParams

    config = LlmModelConfig(
        path=Path(args.model),
        max_batch_size=16,
        max_context=args.mem_tokens,
        session=SessionConfig(intra_op_threads=args.threads),
    )
    engine = ModelEngine.from_config(config)
    loaded = _peak_rss_mb()
    spec = engine.spec
    reserved = 2 * spec.num_layers * 2 * 16 * spec.num_kv_heads * args.mem_tokens * spec.head_dim * 4
    encode = engine.tokenizer.encode
    params = SamplingParams(max_tokens=args.mem_tokens - 30, temperature=0.0, ignore_eos=True)
    streams = [engine.generate_stream(_prompt_ids(encode, 30, i), params) for i in range(16)]
    started = time.perf_counter()
    for s in streams:
        for _ in s:
            pass
    elapsed = time.perf_counter() - started
    engine.close()
    return {
        "rss_after_load_mb": loaded,
        "peak_rss_mb": _peak_rss_mb(),
        "kv_reserved_mb": reserved / 2**20,
        "tokens": 16 * (args.mem_tokens - 30),
        "seconds": elapsed,
    }


# ---- worker: onnxruntime-genai (runs under the genai venv's python) ---------------------------------------
def _genai_config(model_dir: Path, threads: int) -> dict:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    llm = manifest["llm"]
    return {
        "model": {
            "bos_token_id": llm["bos_token_id"],
            "context_length": llm["context_length"],
            "eos_token_id": llm["eos_token_ids"],
            "pad_token_id": llm["pad_token_id"] or 0,
            "type": "llama",
            "vocab_size": llm["vocab_size"],
            "decoder": {
                "session_options": {
                    "log_id": "onnxruntime-genai",
                    "intra_op_num_threads": threads,
                    "provider_options": [],
                },
                "filename": "model.onnx",
                "head_size": llm["head_dim"],
                "hidden_size": llm["hidden_size"],
                "num_attention_heads": llm["num_heads"],
                "num_hidden_layers": llm["num_layers"],
                "num_key_value_heads": llm["num_kv_heads"],
                "inputs": {
                    "input_ids": llm["input_ids_name"],
                    "attention_mask": llm["attention_mask_name"],
                    "position_ids": llm["position_ids_name"],
                    "past_key_names": llm["past_key_name"].replace("{layer}", "%d"),
                    "past_value_names": llm["past_value_name"].replace("{layer}", "%d"),
                },
                "outputs": {
                    "logits": llm["logits_name"],
                    "present_key_names": llm["present_key_name"].replace("{layer}", "%d"),
                    "present_value_names": llm["present_value_name"].replace("{layer}", "%d"),
                },
            },
        },
        "search": {
            "do_sample": False,
            "max_length": 2048,
            "min_length": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": False,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }


def _genai_threads_copy(folder: Path, dest: Path, threads: int) -> Path:
    """Link a genai model folder's files into `dest` with the session's thread count pinned."""
    dest.mkdir()
    for item in Path(folder).iterdir():
        if item.name != "genai_config.json":
            (dest / item.name).symlink_to(item.resolve())
    config = json.loads((Path(folder) / "genai_config.json").read_text())
    config["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = threads
    (dest / "genai_config.json").write_text(json.dumps(config, indent=1))
    return dest


def worker_genai(args: argparse.Namespace) -> dict:
    import numpy as np
    import onnxruntime_genai as og

    model = og.Model(args.genai_dir)
    ids_by_len = json.loads(Path(args.prompts_json).read_text())
    out: dict = {"engine": f"onnxruntime-genai {og.__version__}"}

    pad = json.loads((Path(args.genai_dir) / "genai_config.json").read_text())["model"].get("pad_token_id", 0)
    pad = pad[0] if isinstance(pad, list) else pad

    def run(prompts: list[list[int]], new_tokens: int) -> tuple[float, list[float]]:
        width = max(len(p) for p in prompts)
        batch = np.array([[pad] * (width - len(p)) + p for p in prompts], dtype=np.int32)  # left padding
        params = og.GeneratorParams(model)
        total = width + new_tokens
        params.set_search_options(
            max_length=total, min_length=total, batch_size=len(prompts), do_sample=False
        )
        generator = og.Generator(model, params)
        started = time.perf_counter()
        generator.append_tokens(batch)
        stamps = []
        for _ in range(new_tokens):
            generator.generate_next_token()
            stamps.append(time.perf_counter())
            if generator.is_done():
                break
        return started, stamps

    run([ids_by_len["8"][0]], 2)  # warm-up
    out["prefill_30_ms"] = 1e3 * _median([_first_token(*run([p], 1)) for p in ids_by_len["30"]])
    out["prefill_500_ms"] = 1e3 * _median([_first_token(*run([p], 1)) for p in ids_by_len["500"]])
    for n, key in ((1, "batch1_tok_s"), (4, "agg4_tok_s"), (16, "agg16_tok_s")):
        _, stamps = run(ids_by_len["agg"][:n], args.tokens)
        out[key] = n * (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return out


# ---- worker: llama.cpp ------------------------------------------------------------------------------------
def worker_llamacpp(args: argparse.Namespace) -> dict:
    from llama_cpp import Llama

    llm = Llama(model_path=args.gguf, n_ctx=2048, n_threads=args.threads, n_batch=512, verbose=False)
    ids_by_len = json.loads(Path(args.prompts_json).read_text())

    def run(prompt: list[int], new_tokens: int) -> tuple[float, list[float]]:
        started, stamps = time.perf_counter(), []
        for _ in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            stamps.append(time.perf_counter())
            if len(stamps) >= new_tokens:
                break
        return started, stamps

    out: dict = {"engine": "llama.cpp (llama-cpp-python, source GGUF)"}
    out["prefill_30_ms"] = 1e3 * _median([_first_token(*run(p, 1)) for p in ids_by_len["30"]])
    out["prefill_500_ms"] = 1e3 * _median([_first_token(*run(p, 1)) for p in ids_by_len["500"]])
    _, stamps = run(ids_by_len["agg"][0], args.tokens)
    out["batch1_tok_s"] = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return out


# ---- orchestration ----------------------------------------------------------------------------------------
def _run_worker(python: str, mode: str, args: argparse.Namespace, extra: list[str]) -> dict:
    cmd = [
        python,
        str(Path(__file__).resolve()),
        "--worker",
        mode,
        "--model",
        str(args.model),
        "--threads",
        str(args.threads),
        "--tokens",
        str(args.tokens),
        "--reps",
        str(args.reps),
        "--mem-tokens",
        str(args.mem_tokens),
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _prompts_file(model_dir: Path, tmp: Path) -> Path:
    sys.path.insert(0, str(REPO))
    from realizar_ort.tokenizer import Tokenizer

    tok = Tokenizer.from_file(model_dir / "tokenizer.json")
    encode = tok.encode
    data = {
        "8": [_prompt_ids(encode, 8)],
        "30": [_prompt_ids(encode, 30, i) for i in range(3)],
        "500": [_prompt_ids(encode, 500, i) for i in range(2)],
        "agg": [_prompt_ids(encode, 30, 100 + i) for i in range(16)],
    }
    path = tmp / "prompts.json"
    path.write_text(json.dumps(data))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=REPO / "models" / "smollm2-135m-instruct")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--tokens", type=int, default=64, help="decode tokens per stream")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--mem-tokens", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved runs per engine; the best is kept")
    parser.add_argument("--quick", action="store_true", help="fewer tokens, one round, no memory run")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--genai-python", default="/tmp/genai-venv/bin/python")
    parser.add_argument("--genai-model", type=Path, help="a folder made by onnxruntime-genai's model builder")
    parser.add_argument("--worker", choices=["ours", "memory", "genai", "llamacpp"], help=argparse.SUPPRESS)
    parser.add_argument("--genai-dir", help=argparse.SUPPRESS)
    parser.add_argument("--prompts-json", help=argparse.SUPPRESS)
    parser.add_argument("--gguf", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = {
            "ours": worker_ours,
            "memory": worker_memory,
            "genai": worker_genai,
            "llamacpp": worker_llamacpp,
        }[args.worker](args)
        print(json.dumps(result))
        return
    if args.quick:
        args.tokens, args.reps, args.rounds, args.no_memory = 32, 2, 1, True

    model_dir = args.model.resolve()
    print(
        f"model {model_dir.name}, {args.threads} threads, {args.tokens} decode tokens per stream, {args.rounds} round(s)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp_name:
        tmp = Path(tmp_name)
        jobs, skipped = _plan(args, model_dir, tmp)
        results: dict[str, dict] = {}
        for _ in range(args.rounds):  # engines interleaved, best figure per engine kept (shared machine)
            for name, python, mode, extra, label in jobs:
                if name in skipped:
                    continue
                try:
                    run = _run_worker(python, mode, args, extra)
                except Exception as exc:
                    if name == "ours":
                        raise
                    skipped[name] = f"failed: {exc}"
                    continue
                run["engine"] += label
                results[name] = _best(results.get(name), run)
    memory = None
    if not args.no_memory:
        memory = _run_worker(sys.executable, "memory", args, [])
    _report(results, skipped, memory, args)


def _best(old: dict | None, new: dict) -> dict:
    if old is None:
        return new
    merged = dict(old)
    for key, value in new.items():
        if isinstance(value, float) and key in old:
            lower_is_better = key.endswith("_ms") or key == "outside_run_share"
            merged[key] = min(old[key], value) if lower_is_better else max(old[key], value)
    return merged


def _plan(args: argparse.Namespace, model_dir: Path, tmp: Path) -> tuple[list[tuple], dict[str, str]]:
    """Which engines run (name, python, worker mode, extra args, label) and which are skipped, and why."""
    prompts = str(_prompts_file(model_dir, tmp))
    jobs: list[tuple] = [("ours", sys.executable, "ours", [], "")]
    skipped: dict[str, str] = {}
    # onnxruntime-genai, in its own venv: on our graph, and on its model builder's graph if given
    if not Path(args.genai_python).is_file():
        skipped["genai"] = (
            f"{args.genai_python} not found (python -m venv /tmp/genai-venv; /tmp/genai-venv/bin/pip install onnxruntime-genai)"
        )
    else:
        ours_dir = tmp / "genai-ours"
        ours_dir.mkdir()
        (ours_dir / "model.onnx").symlink_to(model_dir / "model.onnx")
        (ours_dir / "genai_config.json").write_text(
            json.dumps(_genai_config(model_dir, args.threads), indent=1)
        )
        jobs.append(
            (
                "genai-ourgraph",
                args.genai_python,
                "genai",
                ["--genai-dir", str(ours_dir), "--prompts-json", prompts],
                " (on our exported graph)",
            )
        )
        if args.genai_model is None:
            skipped["genai-builder"] = (
                "no --genai-model folder (build one with onnxruntime_genai.models.builder -p fp32 -e cpu in the "
                "genai venv; it needs transformers 5.x and torch there)"
            )
        else:
            folder = _genai_threads_copy(args.genai_model, tmp / "genai-builder", args.threads)
            jobs.append(
                (
                    "genai-builder",
                    args.genai_python,
                    "genai",
                    ["--genai-dir", str(folder), "--prompts-json", prompts],
                    " (its model builder's fp32 graph)",
                )
            )
    # llama.cpp, on the source GGUF
    source = json.loads((model_dir / "manifest.json").read_text())["source"]
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        skipped["llama.cpp"] = (
            "llama-cpp-python is not installed (it compiles llama.cpp from source, ~9 minutes)"
        )
    else:
        if source.get("kind") != "gguf":
            skipped["llama.cpp"] = f"the model's source is {source.get('kind')!r}, not a GGUF"
        else:
            jobs.append(
                (
                    "llama.cpp",
                    sys.executable,
                    "llamacpp",
                    ["--gguf", source["path"], "--prompts-json", prompts],
                    "",
                )
            )
    return jobs, skipped


def _report(
    results: dict[str, dict], skipped: dict[str, str], memory: dict | None, args: argparse.Namespace
) -> None:
    rows = [
        ("prefill 30 tok (ms)", "prefill_30_ms"),
        ("prefill 500 tok (ms)", "prefill_500_ms"),
        ("batch-1 decode tok/s", "batch1_tok_s"),
        ("aggregate 4 streams tok/s", "agg4_tok_s"),
        ("aggregate 16 streams tok/s", "agg16_tok_s"),
    ]
    names = list(results)
    print()
    print(f"{'':28}" + "".join(f"{n:>14}" for n in names))
    for label, key in rows:
        print(f"{label:28}" + "".join(f"{results[n].get(key, float('nan')):>14.1f}" for n in names))
    ours = results["ours"]
    print()
    for name in names[1:]:
        peer = results[name]
        print(f"vs {peer['engine']}:")
        for label, key in rows:
            if key in peer and key in ours:
                ratio = peer[key] / ours[key] if key.startswith("prefill") else ours[key] / peer[key]
                print(f"  {label:28} {ratio:5.2f}x  (>1 = ours faster)")
    for name, why in skipped.items():
        print(f"{name}: skipped: {why}")
    print()
    print(f"ours: aggregate 16 streams / batch-1 = {ours['agg16_tok_s'] / ours['batch1_tok_s']:.2f}x")
    print(
        f"ours: batch-1 decode step {ours['step_ms']:.1f} ms, {100 * ours['outside_run_share']:.1f}% outside session.run"
    )
    if memory:
        print(
            f"ours: 16 streams x {args.mem_tokens} tokens: peak RSS {memory['peak_rss_mb']:.0f} MB "
            f"(after load {memory['rss_after_load_mb']:.0f} MB; KV buffers reserved up front {memory['kv_reserved_mb']:.0f} MB "
            f"virtual, = 2 x layers x 2 x 16 x kv_heads x {args.mem_tokens} x head_dim x 4 B); "
            f"{memory['tokens'] / memory['seconds']:.0f} tok/s over the run"
        )


if __name__ == "__main__":
    main()
