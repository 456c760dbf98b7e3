"""Decode benchmark: our ModelEngine vs onnxruntime-genai and llama.cpp on the same weights, in one run.

    .venv/bin/python bench/decode.py [--model models/smollm2-135m-instruct] [--quick] [--no-memory]

Prints prefill time (30 and 500 prompt tokens), batch-1 decode tok/s, aggregate decode tok/s at 1, 4
and 16 concurrent streams, the ratios against each peer, the share of a decode step spent outside
`session.run`, and peak memory for 16 streams of 1,024 tokens (its own process).

How engines are compared: ours and onnxruntime-genai run in ONE process (the genai venv's python with the
project's packages appended), interleaved metric by metric and round by round, after an unused "ballast"
session (the first onnxruntime session a process loads decoded 5-10% slower than later ones on this
machine). That process runs twice, ours loaded first in one and genai in the other, and the two are
averaged. Our streams are consumed by one thread per stream, as the server does.

Peers, each skipped with the reason printed when it cannot run:
- onnxruntime-genai from a separate virtualenv (`--genai-python`, default /tmp/genai-venv/bin/python;
  it must never be installed into the project venv), on its own model builder's fp32 graph of the same
  weights (`--genai-model`, default ~/.cache/realizar-ort/genai/<model folder name>). With a `--graph
  optimum` export it also runs our graph through a generated genai_config.json.
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


# ---- engines under test: one measuring interface -----------------------------------------------------------
class OursRunner:
    """Our ModelEngine, driven through its public streaming API."""

    def __init__(self, args: argparse.Namespace) -> None:
        sys.path.insert(0, str(REPO))
        from realizar_ort.config import LlmModelConfig, SessionConfig
        from realizar_ort.generation.engine import ModelEngine

        config = LlmModelConfig(
            path=Path(args.model),
            max_batch_size=16,
            max_context=getattr(args, "max_context", 2048),
            max_queued=64,
            session=SessionConfig(intra_op_threads=args.threads),
        )
        self.engine = ModelEngine.from_config(config)
        self.label = "realizar-ort"
        self.extra: dict[str, list[float]] = {"outside_run_share": [], "step_ms": []}

    def prefill_ms(self, ids: list[int]) -> float:
        from realizar_ort.generation.sampling import SamplingParams

        started = time.perf_counter()
        next(self.engine.generate_stream(ids, SamplingParams(max_tokens=1, temperature=0.0)))
        return 1e3 * (time.perf_counter() - started)

    def decode_tok_s(self, prompts: list[list[int]], tokens: int) -> float:
        """Decode tok/s summed over concurrent requests, counted once all of them are decoding."""
        from realizar_ort.generation.sampling import SamplingParams

        params = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)
        before = self.engine.stats()
        handles = [self.engine.generate_stream(p, params) for p in prompts]
        stamps: list[list[float]] = [[] for _ in handles]

        def consume(i: int) -> None:
            for _ in handles[i]:
                stamps[i].append(time.perf_counter())

        threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(handles))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if len(prompts) == 1:
            after = self.engine.stats()
            step = after["decode_step_seconds"] - before["decode_step_seconds"]
            run = after["session_run_seconds"] - before["session_run_seconds"]
            self.extra["outside_run_share"].append((step - run) / step)
            self.extra["step_ms"].append(1e3 * step / max(1, after["decode_steps"] - before["decode_steps"]))
        t0 = max(s[0] for s in stamps)  # every stream has been prefilled
        t1 = max(s[-1] for s in stamps)
        return sum(1 for s in stamps for t in s if t > t0) / (t1 - t0)

    def close(self) -> None:
        self.engine.close()


class GenaiRunner:
    """onnxruntime-genai's Generator on a genai model folder (batch = left-padded prompts)."""

    def __init__(self, folder: str, label: str) -> None:
        import onnxruntime_genai as og

        self.og = og
        self.model = og.Model(folder)
        self.label = f"onnxruntime-genai {og.__version__} ({label})"
        self.extra: dict[str, list[float]] = {}
        pad = json.loads((Path(folder) / "genai_config.json").read_text())["model"].get("pad_token_id", 0)
        self.pad = pad[0] if isinstance(pad, list) else pad

    def _run(self, prompts: list[list[int]], new_tokens: int) -> tuple[float, list[float]]:
        import numpy as np

        width = max(len(p) for p in prompts)
        batch = np.array([[self.pad] * (width - len(p)) + p for p in prompts], dtype=np.int32)
        params = self.og.GeneratorParams(self.model)
        total = width + new_tokens
        params.set_search_options(
            max_length=total, min_length=total, batch_size=len(prompts), do_sample=False
        )
        generator = self.og.Generator(self.model, params)
        started = time.perf_counter()
        generator.append_tokens(batch)
        stamps = []
        for _ in range(new_tokens):
            generator.generate_next_token()
            stamps.append(time.perf_counter())
            if generator.is_done():
                break
        return started, stamps

    def prefill_ms(self, ids: list[int]) -> float:
        started, stamps = self._run([ids], 1)
        return 1e3 * (stamps[0] - started)

    def decode_tok_s(self, prompts: list[list[int]], tokens: int) -> float:
        _, stamps = self._run(prompts, tokens)
        return len(prompts) * (len(stamps) - 1) / (stamps[-1] - stamps[0])

    def close(self) -> None:
        del self.model


def _measure_rounds(engines: dict, prompts: dict, args: argparse.Namespace) -> dict[str, dict]:
    """Every metric for every engine, engines interleaved metric by metric and round by round (so all
    see the same machine load); medians over rounds."""
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in engines}
    metrics = [
        ("prefill_30_ms", lambda e, r: _median([e.prefill_ms(p) for p in prompts["30"]])),
        ("prefill_500_ms", lambda e, r: e.prefill_ms(prompts["500"][r % len(prompts["500"])])),
        ("batch1_tok_s", lambda e, r: e.decode_tok_s(prompts["agg"][:1], args.tokens)),
        ("agg4_tok_s", lambda e, r: e.decode_tok_s(prompts["agg"][:4], args.tokens)),
        ("agg16_tok_s", lambda e, r: e.decode_tok_s(prompts["agg"][:16], args.tokens)),
    ]
    for engine in engines.values():  # warm-up
        engine.prefill_ms(prompts["8"][0])
        engine.decode_tok_s(prompts["agg"][:2], 4)
    names = list(engines)
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate who goes first
        for key, measure in metrics:
            for name in order:
                samples[name].setdefault(key, []).append(measure(engines[name], r))
    out: dict[str, dict] = {}
    for name, engine in engines.items():
        out[name] = {
            "engine": engine.label,
            **{k: _median(v) for k, v in {**samples[name], **engine.extra}.items()},
        }
        engine.close()
    return out


# ---- workers (this file re-invoked in a subprocess) ---------------------------------------------------------
def worker_ours(args: argparse.Namespace) -> dict:
    prompts = json.loads(Path(args.prompts_json).read_text())
    return _measure_rounds({"ours": OursRunner(args)}, prompts, args)


def worker_paired(args: argparse.Namespace) -> dict:
    """Ours and onnxruntime-genai in one process (the genai venv's python, with the project's packages
    appended to sys.path), interleaved so that they share the same machine conditions. `--load-order`
    says which is loaded first; main() runs this twice, once in each order."""
    sys.path.append(args.project_site)
    sys.path.insert(0, str(REPO))
    from realizar_ort.config import SessionConfig
    from realizar_ort.onnx_session import create_session

    prompts = json.loads(Path(args.prompts_json).read_text())
    peers = json.loads(args.genai_dirs)
    # The first model a process loads decoded 5-10% slower than later ones (same model and options, both
    # orders); an unused session loaded first and kept takes that slot, so neither engine sits in it.
    ballast = create_session(Path(args.model) / "model.onnx", SessionConfig(intra_op_threads=args.threads))  # noqa: F841
    engines: dict = {}
    if args.load_order == "ours-first":
        engines["ours"] = OursRunner(args)
    for name, folder, label in peers:
        engines[name] = GenaiRunner(folder, label)
    if args.load_order == "peers-first":
        engines["ours"] = OursRunner(args)
    engines = {"ours": engines.pop("ours"), **engines}  # report ours first either way
    return _measure_rounds(engines, prompts, args)


def worker_memory(args: argparse.Namespace) -> dict:
    """Peak RSS for 16 concurrent streams of `--mem-tokens` tokens (prompt 30 + generated)."""
    sys.path.insert(0, str(REPO))
    from realizar_ort.config import LlmModelConfig, SessionConfig
    from realizar_ort.generation.engine import ModelEngine
    from realizar_ort.generation.sampling import SamplingParams

    config = LlmModelConfig(
        path=Path(args.model),
        max_batch_size=16,
        max_context=args.mem_tokens,
        session=SessionConfig(intra_op_threads=args.threads),
    )
    engine = ModelEngine.from_config(config)
    loaded = _peak_rss_mb()
    spec = engine.spec
    copies = 1 if spec.kv_layout == "shared_buffer" else 2  # in-place slots, or ping-pong buffers
    reserved = copies * spec.num_layers * 2 * 16 * spec.num_kv_heads * args.mem_tokens * spec.head_dim * 4
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
        "kv_copies": copies,
        "tokens": 16 * (args.mem_tokens - 30),
        "seconds": elapsed,
    }


# ---- onnxruntime-genai model folders ------------------------------------------------------------------------
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
def _run_worker(
    python: str, mode: str, args: argparse.Namespace, extra: list[str], rounds: int | None = None
) -> dict:
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
        "--rounds",
        str(rounds or args.rounds),
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
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--mem-tokens", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="fewer tokens, one round, no memory run")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--genai-python", default="/tmp/genai-venv/bin/python")
    parser.add_argument(
        "--genai-model", type=Path,
        help="a folder made by onnxruntime-genai's model builder (default: ~/.cache/realizar-ort/genai/<model folder "
        "name> when it exists)",
    )
    parser.add_argument("--worker", choices=["ours", "paired", "memory", "llamacpp"], help=argparse.SUPPRESS)
    parser.add_argument("--genai-dirs", help=argparse.SUPPRESS)
    parser.add_argument("--load-order", choices=["ours-first", "peers-first"], default="ours-first", help=argparse.SUPPRESS)
    parser.add_argument("--project-site", help=argparse.SUPPRESS)
    parser.add_argument("--prompts-json", help=argparse.SUPPRESS)
    parser.add_argument("--gguf", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        workers = {
            "ours": worker_ours,
            "paired": worker_paired,
            "memory": worker_memory,
            "llamacpp": worker_llamacpp,
        }
        print(json.dumps(workers[args.worker](args)))
        return
    if args.quick:
        args.tokens, args.rounds, args.no_memory = 32, 1, True

    model_dir = args.model.resolve()
    print(
        f"model {model_dir.name}, {args.threads} threads, {args.tokens} decode tokens per stream, "
        f"{args.rounds} interleaved round(s), load average {os.getloadavg()[0]:.1f}"
    )
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as tmp_name:
        tmp = Path(tmp_name)
        prompts = str(_prompts_file(model_dir, tmp))
        genai_dirs = _genai_folders(args, model_dir, tmp, skipped)
        if genai_dirs:
            import site

            extra = ["--prompts-json", prompts, "--genai-dirs", json.dumps(genai_dirs)]
            extra += ["--project-site", site.getsitepackages()[0]]
            try:
                first_half = (args.rounds + 1) // 2
                runs = [
                    _run_worker(args.genai_python, "paired", args, [*extra, "--load-order", order], rounds)
                    for order, rounds in (("ours-first", first_half), ("peers-first", max(1, args.rounds - first_half)))
                ]
                results = _mean_of_runs(runs)
                print("ours and the peers ran in two processes, each loaded first in one (after a ballast session)")
            except Exception as exc:  # noqa: BLE001 - fall back to ours alone, saying why
                for name, _, _ in genai_dirs:
                    skipped[name] = f"failed: {exc}"
                genai_dirs = []
        if not genai_dirs:
            results = _run_worker(sys.executable, "ours", args, ["--prompts-json", prompts])
        reason = _llamacpp_unavailable(model_dir)
        if reason:
            skipped["llama.cpp"] = reason
        else:
            gguf = json.loads((model_dir / "manifest.json").read_text())["source"]["path"]
            try:
                results["llama.cpp"] = _run_worker(
                    sys.executable, "llamacpp", args, ["--gguf", gguf, "--prompts-json", prompts]
                )
            except Exception as exc:  # noqa: BLE001
                skipped["llama.cpp"] = f"failed: {exc}"
    print(
        f"load average after the runs: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (>1 per CPU: contended)"
    )
    memory = None if args.no_memory else _run_worker(sys.executable, "memory", args, [])
    _report(results, skipped, memory, args)


def _mean_of_runs(runs: list[dict]) -> dict:
    """Per engine, the mean of each numeric figure over worker runs (weighted by nothing: runs are halves)."""
    merged: dict = {}
    for name in runs[0]:
        merged[name] = dict(runs[0][name])
        for key, value in runs[0][name].items():
            if isinstance(value, (int, float)):
                merged[name][key] = sum(run[name][key] for run in runs) / len(runs)
    return merged


def _genai_folders(args: argparse.Namespace, model_dir: Path, tmp: Path, skipped: dict[str, str]) -> list:
    """[name, folder, label] for each onnxruntime-genai variant that can run; reasons for the others."""
    if not Path(args.genai_python).is_file():
        skipped["onnxruntime-genai"] = (
            f"{args.genai_python} not found (python -m venv /tmp/genai-venv; "
            "/tmp/genai-venv/bin/pip install onnxruntime-genai; never into the project venv)"
        )
        return []
    folders = []
    if json.loads((model_dir / "manifest.json").read_text())["llm"].get("kv_layout") == "shared_buffer":
        skipped["genai-ourgraph"] = (
            "our fused graph takes seqlens_k / total_sequence_length directly, which a genai_config cannot feed "
            "(genai derives them from attention_mask); the like-for-like graph comparison is --genai-model"
        )
    else:
        ours_dir = tmp / "genai-ours"
        ours_dir.mkdir()
        for item in model_dir.glob("model.onnx*"):
            (ours_dir / item.name).symlink_to(item)
        (ours_dir / "genai_config.json").write_text(json.dumps(_genai_config(model_dir, args.threads), indent=1))
        folders.append(["genai-ourgraph", str(ours_dir), "on our exported graph"])
    default_builder = Path.home() / ".cache" / "realizar-ort" / "genai" / model_dir.name
    if args.genai_model is None and (default_builder / "genai_config.json").is_file():
        args.genai_model = default_builder
    if args.genai_model is None:
        skipped["genai-builder"] = (
            f"no --genai-model folder and none at {default_builder} (make one with `python -m "
            f"onnxruntime_genai.models.builder -i HF_DIR -o {default_builder} -p fp32 -e cpu` in the genai venv; it "
            "needs transformers 5.x and torch there)"
        )
    else:
        folder = _genai_threads_copy(args.genai_model, tmp / "genai-builder", args.threads)
        folders.append(["genai-builder", str(folder), "its model builder's fp32 graph"])
    return folders


def _llamacpp_unavailable(model_dir: Path) -> str | None:
    source = json.loads((model_dir / "manifest.json").read_text())["source"]
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return "llama-cpp-python is not installed (it compiles llama.cpp from source, ~9 minutes)"
    if source.get("kind") != "gguf":
        return f"the model's source is {source.get('kind')!r}, not a GGUF"
    return None


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
    print(f"{'':28}" + "".join(f"{n:>16}" for n in names))
    for label, key in rows:
        print(f"{label:28}" + "".join(f"{results[n].get(key, float('nan')):>16.1f}" for n in names))
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
            f"virtual, = {memory['kv_copies']} x layers x 2 x 16 x kv_heads x {args.mem_tokens} x head_dim x 4 B); "
            f"{memory['tokens'] / memory['seconds']:.0f} tok/s over the run"
        )


if __name__ == "__main__":
    main()
