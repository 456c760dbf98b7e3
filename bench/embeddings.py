"""Embedding throughput, CPU cost, peak memory and cold start: realizar-ort vs sentence-transformers.

    .venv/bin/python bench/embeddings.py [--sentences 2000] [--batches 1,32,128] [--engines ...]
    .venv/bin/python bench/embeddings.py --interleave --sentences 1000 --ab-batch 32 --repeats 3

Every engine runs in its own subprocess (so peak RSS and cold start are its own): the child embeds one text
as soon as it can (cold start = parent's spawn time to that first vector), then embeds the whole corpus
once per batch size, reporting wall time and process CPU time (all threads) for each. Vectors are compared
with sentence-transformers (torch) by cosine. The corpus is a fixed, seeded mix of lengths (mostly short
sentences, a tail of paragraphs longer than the 256-token limit). The machine may be shared: CPU ms per
sentence is the steadier figure.

Engines: ``realizar`` (EmbeddingEngine on models/all-minilm-l6-v2), ``realizar-fused`` (the same with
onnxruntime's offline BERT fusions, built into a temp folder when asked for), ``st-torch``
(sentence-transformers, torch), ``st-onnx`` (sentence-transformers' ONNX backend pointed at our exported
graph, so nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = REPO / "models" / "all-minilm-l6-v2"
THREADS = 2

_WORDS = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at", "from", "it", "an", "be", "this", "are", "or", "which", "have", "has", "not", "but", "had", "they", "were", "their", "one", "all", "there", "can", "more", "other", "new", "some", "time", "would", "these", "first", "two", "may", "after", "into", "than", "only", "most", "over", "also", "such", "many", "any", "use", "system", "data", "model", "network", "inference", "server", "request", "memory", "vector", "query", "document", "search", "engine", "cluster", "latency", "throughput", "batch", "token", "sentence", "language", "research", "university", "government", "history", "population", "river", "mountain", "city", "village", "music", "film", "album", "season", "player", "team", "league", "company", "market", "price", "energy", "water", "climate", "species", "protein", "cell", "patient", "treatment", "disease", "policy", "election", "court", "law", "article", "journal", "report", "study", "result", "method", "analysis", "experiment", "design", "build", "quickly", "carefully", "although", "however", "because", "therefore", "meanwhile", "nevertheless", "café", "naïve", "Zürich", "São", "Paulo", "東京", "北京", "서울", "Москва", "données", "über", "straße", "2024", "3.14", "42", "#hashtag", "e-mail", "well-known", "state-of-the-art"]


def make_corpus(n: int, seed: int = 1234) -> list[str]:
    """A fixed mixed-length corpus: 60% short (3-15 words), 30% medium (16-60), 10% long (120-300)."""
    rng = random.Random(seed)
    corpus = []
    for _ in range(n):
        r = rng.random()
        length = rng.randint(3, 15) if r < 0.6 else rng.randint(16, 60) if r < 0.9 else rng.randint(120, 300)
        words = [rng.choice(_WORDS) for _ in range(length)]
        corpus.append(" ".join(words).capitalize() + ".")
    return corpus


# ---- child side --------------------------------------------------------------------------------------


def _load(engine: str, batch: int, model_dir: Path):
    """Return embed(texts, batch) -> np.ndarray for ``engine``."""
    if engine.startswith("realizar"):
        from realizar_ort.config import EmbeddingModelConfig, SessionConfig
        from realizar_ort.embeddings.engine import EmbeddingEngine

        cfg = EmbeddingModelConfig(path=model_dir, session=SessionConfig(intra_op_threads=THREADS))
        engine_ = EmbeddingEngine.from_folder(model_dir, cfg)

        def embed(texts: list[str], batch_size: int) -> np.ndarray:
            return engine_.embed_numpy(texts, batch_size=batch_size)

        return embed
    import torch

    torch.set_num_threads(THREADS)
    from realizar_ort.export.embedding import DEFAULT_SOURCE
    from sentence_transformers import SentenceTransformer

    if engine == "st-torch":
        model = SentenceTransformer(str(DEFAULT_SOURCE), device="cpu")
    else:  # st-onnx: a copy of the source folder whose onnx/model.onnx is our exported graph
        folder = Path(tempfile.mkdtemp(prefix="st-onnx-"))
        for item in DEFAULT_SOURCE.iterdir():
            (folder / item.name).symlink_to(item)
        (folder / "onnx").mkdir()
        (folder / "onnx" / "model.onnx").symlink_to(model_dir / "model.onnx")
        model = SentenceTransformer(str(folder), device="cpu", backend="onnx",
                                    model_kwargs={"provider": "CPUExecutionProvider"})

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        return np.asarray(model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                                       show_progress_bar=False), dtype=np.float32)

    return embed


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(args: argparse.Namespace) -> None:
    embed = _load(args.worker, 32, Path(args.model_dir))
    embed(["cold start"], 1)
    first_vector_at = time.time()
    corpus = make_corpus(args.sentences)
    results = {"engine": args.worker, "first_vector_at": first_vector_at, "runs": {}}
    vectors = None
    for batch in [int(b) for b in args.batches.split(",")]:
        embed(corpus[:64], batch)  # warm-up at this batch size
        wall0, cpu0 = time.perf_counter(), _cpu_seconds()
        out = embed(corpus, batch)
        wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
        results["runs"][batch] = {"wall_s": wall, "cpu_s": cpu}
        vectors = out if vectors is None else vectors
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.save(args.vectors_out, vectors)
    print("RESULT " + json.dumps(results), flush=True)


# ---- parent side -------------------------------------------------------------------------------------


def _fused_model_dir(tmp: Path) -> Path:
    from realizar_ort.export.embedding import _optimize_bert

    folder = tmp / "fused"
    folder.mkdir()
    for name in ("manifest.json", "tokenizer.json", "reference.npz"):
        shutil.copyfile(MODEL_DIR / name, folder / name)
    _optimize_bert(MODEL_DIR / "model.onnx", folder / "model.onnx")
    return folder


def run_engine(engine: str, args: argparse.Namespace, tmp: Path) -> dict:
    model_dir = _fused_model_dir(tmp) if engine == "realizar-fused" else MODEL_DIR
    vectors_out = tmp / f"{engine}.npy"
    cmd = [sys.executable, __file__, "--worker", engine, "--sentences", str(args.sentences), "--batches",
           args.batches, "--model-dir", str(model_dir), "--vectors-out", str(vectors_out)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": str(THREADS)}
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{engine} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(lines[0][len("RESULT "):])
    result["cold_start_s"] = result["first_vector_at"] - started
    result["vectors"] = np.load(vectors_out)
    return result


def interleaved(args: argparse.Namespace) -> None:
    """Same process, same moment: alternate the engines at one batch size, ``--repeats`` rounds.

    On a shared machine the separate-process runs above see different background load; alternating the
    engines inside one process gives each the same conditions, so this is the fairer throughput ratio.
    """
    corpus = make_corpus(args.sentences)
    tmp = Path(tempfile.mkdtemp(prefix="bench-emb-"))
    engines = {name: _load(name, args.ab_batch, _fused_model_dir(tmp) if name == "realizar-fused" else MODEL_DIR)
               for name in args.engines.split(",")}
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, embed in engines.items():
            wall0, cpu0 = time.perf_counter(), _cpu_seconds()
            embed(corpus, args.ab_batch)
            timings[name].append((time.perf_counter() - wall0, _cpu_seconds() - cpu0))
    base_name = "st-torch" if "st-torch" in timings else next(iter(engines))
    base = sorted(w for w, _ in timings[base_name])[args.repeats // 2]
    print(f"\ninterleaved in one process: batch {args.ab_batch}, {args.sentences} sentences, median of {args.repeats}")
    print(f"| engine | sentences/s | CPU ms/sentence | vs {base_name} |")
    print("|---|---|---|---|")
    for name, runs in timings.items():
        wall = sorted(w for w, _ in runs)[args.repeats // 2]
        cpu = sorted(c for _, c in runs)[args.repeats // 2]
        print(f"| {name} | {args.sentences / wall:.1f} | {1000 * cpu / args.sentences:.2f} | {base / wall:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--batches", default="1,32,128")
    parser.add_argument("--engines", default="realizar,st-torch,st-onnx")
    parser.add_argument("--interleave", action="store_true",
                        help="instead: alternate the engines in one process at --ab-batch (fair ratio on a busy machine)")
    parser.add_argument("--ab-batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", default=str(MODEL_DIR), help=argparse.SUPPRESS)
    parser.add_argument("--vectors-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        child(args)
        return
    if args.interleave:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        interleaved(args)
        return

    engines = args.engines.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-emb-") as tmp_name:
        results = {}
        for engine in engines:
            print(f"running {engine} ...", file=sys.stderr, flush=True)
            results[engine] = run_engine(engine, args, Path(tmp_name))
    baseline = results.get("st-torch")
    print(f"\nall-MiniLM-L6-v2, {args.sentences} mixed-length sentences, {THREADS} threads, "
          f"{os.cpu_count()} CPUs visible")
    print("| engine | batch | sentences/s | CPU ms/sentence | vs st-torch (sent/s) | min cosine vs st-torch |"
          " peak RSS MB | cold start s |")
    print("|---|---|---|---|---|---|---|---|")
    for engine, res in results.items():
        if baseline is not None:
            a, b = res["vectors"], baseline["vectors"]
            cosine = float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())
        for batch, run in res["runs"].items():
            rate = args.sentences / run["wall_s"]
            ratio = ""
            if baseline is not None:
                ratio = f"{rate / (args.sentences / baseline['runs'][batch]['wall_s']):.2f}x"
            cos_txt = f"{cosine:.7f}" if baseline is not None else "n/a"
            print(f"| {engine} | {batch} | {rate:.1f} | {1000 * run['cpu_s'] / args.sentences:.2f} | {ratio} | "
                  f"{cos_txt} | {res['peak_rss_mb']:.0f} | {res['cold_start_s']:.2f} |")


if __name__ == "__main__":
    main()
