"""A random-weight model with Llama-3.2-1B's shapes, for benchmarks at a real size (bench-only).

    .venv/bin/python bench/llama_1b_shaped.py --out models/llama-1b-shaped-int4 [--quantize int4|none]
        [--accuracy-level 0|4] [--block-size 32]

16 layers, hidden 2048, 32 heads / 8 KV heads (head_dim 64), MLP 8192, vocabulary 128,256 with tied
embeddings, on the real Llama 3.2 tokenizer: random weights decode exactly as fast as trained ones. Built
straight from numpy (no torch model, no parity check: there is nothing to be faithful to), one layer at a
time; with ``--quantize int4`` a layer's float weights are dropped as soon as its blocks exist, so the build
needs ~2 GB, not the 5 GB of float32. Never built by ``make test``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHAPES = {"num_layers": 16, "hidden": 2048, "heads": 32, "kv_heads": 8, "head_dim": 64, "mlp": 8192, "vocab": 128256}
CONTEXT = 8192
ROPE_THETA = 500000.0


def build(out: Path, quantize: str, accuracy_level: int, block_size: int, seed: int = 0) -> None:
    from realizar_ort.export import llama_graph, onnx_graph
    from realizar_ort.export.llm import _prepare_hf_folder, _write_folder
    from realizar_ort.export.quant_blocks import quantize_rtn
    from realizar_ort.export.sources import resolve_source

    from realizar_ort.manifest import LlmSpec, Manifest

    s = SHAPES
    rng = np.random.default_rng(seed)

    def randn(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)

    layers, quantized = [], {}
    for i in range(s["num_layers"]):
        layer = {
            "q": randn(s["heads"] * s["head_dim"], s["hidden"]), "k": randn(s["kv_heads"] * s["head_dim"], s["hidden"]),
            "v": randn(s["kv_heads"] * s["head_dim"], s["hidden"]), "o": randn(s["hidden"], s["heads"] * s["head_dim"]),
            "gate": randn(s["mlp"], s["hidden"]), "up": randn(s["mlp"], s["hidden"]), "down": randn(s["hidden"], s["mlp"]),
            "input_norm": np.ones(s["hidden"], np.float32), "post_norm": np.ones(s["hidden"], np.float32),
        }
        if quantize == "int4":
            for key in ("q", "k", "v", "o", "gate", "up", "down"):
                quantized[f"layers.{i}.{key}"] = quantize_rtn(layer.pop(key), 4, block_size, symmetric=False)
        layers.append(layer)
        print(f"  layer {i + 1}/{s['num_layers']}", file=sys.stderr, flush=True)
    embed = randn(s["vocab"], s["hidden"]) * 25  # embeddings ~N(0, 0.5): hidden states of a sane scale
    if quantize == "int4":
        quantized["embed"] = quantize_rtn(embed, 8, block_size, symmetric=True)  # GatherBlockQuantized rows
        if accuracy_level == 4:
            quantized["lm_head"] = quantize_rtn(embed, 8, block_size, symmetric=False)
    inv = 1.0 / ROPE_THETA ** (np.arange(0, s["head_dim"], 2, dtype=np.float32) / s["head_dim"])
    angles = np.outer(np.arange(CONTEXT, dtype=np.float32), inv)
    weights = llama_graph.LlamaWeights(
        num_layers=s["num_layers"], num_heads=s["heads"], num_kv_heads=s["kv_heads"], head_dim=s["head_dim"],
        hidden_size=s["hidden"], vocab_size=s["vocab"], rms_norm_eps=1e-5, embed_tokens=embed, lm_head=embed,
        final_norm=np.ones(s["hidden"], np.float32), layers=layers, cos_cache=np.cos(angles), sin_cache=np.sin(angles),
        quantized=quantized, accuracy_level=accuracy_level,
    )
    with tempfile.TemporaryDirectory(prefix="realizar-1b-") as tmp:
        work = Path(tmp)
        hf_dir = _tokenizer_folder(work / "hf", _prepare_hf_folder, resolve_source)
        (work / "onnx").mkdir()
        llama_graph.build_fused_llama_graph(weights, work / "onnx" / "model.onnx")
        del weights, layers, quantized, embed
        staging = work / "out"
        staging.mkdir()
        spec = _write_folder(hf_dir, work / "onnx", staging, "llama3")
        spec.update(kv_layout="shared_buffer", attention_mask_name=None, position_ids_name=None,
                    seqlens_k_name="seqlens_k", total_sequence_length_name="total_sequence_length")
        inputs, outputs = onnx_graph.io_specs(staging / "model.onnx")
        manifest = Manifest(
            kind="llm", name=out.name, onnx_file="model.onnx", tokenizer_file="tokenizer.json",
            chat_template_file="chat_template.jinja", inputs=tuple(inputs), outputs=tuple(outputs),  # type: ignore[arg-type]
            dtype=quantize if quantize != "none" else "float32", special_tokens=spec.pop("special_tokens"),
            source={"kind": "builtin", "spec": "bench/llama_1b_shaped.py", "seed": seed, "shapes": SHAPES},
            exporter={}, verification={"passed": True, "note": "random weights for benchmarks: no parity check"},
            llm=LlmSpec(**spec),
            quantization=None if quantize == "none" else {
                "method": quantize, "block_size": block_size, "accuracy_level": accuracy_level, "symmetric": False,
                "embeddings": "int8-sym", "lm_head": "8-bit" if accuracy_level == 4 else "float32",
            },
        )
        manifest = Manifest.from_dict(manifest.to_dict())
        manifest.write(staging)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, out)
    print(f"wrote {out}", file=sys.stderr)


def _tokenizer_folder(dest: Path, prepare, resolve) -> Path:  # noqa: ANN001
    """config.json + the Llama 3.2 tokenizer, the way the exporter's builtin tiny model gets them."""
    from transformers import LlamaConfig

    hf_dir, _ = prepare(resolve("builtin:tiny-llama3"), dest, "llama3")
    config = json.loads((hf_dir / "config.json").read_text())
    s = SHAPES
    config.update(hidden_size=s["hidden"], intermediate_size=s["mlp"], num_hidden_layers=s["num_layers"],
                  num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"], head_dim=s["head_dim"],
                  vocab_size=s["vocab"], max_position_embeddings=CONTEXT, tie_word_embeddings=True)
    LlamaConfig(**{k: v for k, v in config.items() if k not in ("architectures", "transformers_version")})
    (hf_dir / "config.json").write_text(json.dumps(config))
    for weights in list(hf_dir.glob("*.safetensors")):
        weights.unlink()
    return hf_dir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quantize", choices=["int4", "none"], default="int4")
    parser.add_argument("--accuracy-level", type=int, choices=[0, 4], default=4)
    parser.add_argument("--block-size", type=int, default=32)
    args = parser.parse_args()
    build(args.out, args.quantize, args.accuracy_level, args.block_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
