"""``--quantize {gguf,int4,int8}``: which linear layers become MatMulNBits, and the quality report.

- ``gguf``: a GGUF source's own Q4_0 / Q4_1 / Q8_0 blocks, repacked without changing a weight
  (`gguf_repack`); any other layer type stays float32 and the manifest lists it with the reason.
- ``int4`` / ``int8``: round-to-nearest blockwise weights from a float source (`quant_blocks.quantize_rtn`,
  the scheme of onnxruntime's default MatMulNBits quantizer), symmetric or asymmetric.

Embeddings become 8-bit blocks read by ``GatherBlockQuantized`` (a GGUF's Q8_0 ``token_embd`` exactly; from a
float source, symmetric 8-bit): they cost no decode bandwidth, but memory (a quarter of float32). The LM head is the
largest single matrix of a small model: it is written as 8-bit blocks at accuracy_level 4 and kept float32
at accuracy_level 0, because onnxruntime's CPU MatMulNBits has no float-activation 8-bit kernel (measured
~20x slower than an fp32 MatMul); for the same reason Q8_0 layers and ``int8`` need accuracy_level 4.
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from . import gguf_repack, llama_graph, quality
from .llama_graph import LlamaWeights
from .quant_blocks import QuantLinear, quantize_rtn

__all__ = ["QuantError", "QuantOptions", "for_level", "quality_report", "quantize_weights", "summary"]

Method = Literal["gguf", "int4", "int8"]
_LINEARS = ("q", "k", "v", "o", "gate", "up", "down")


class QuantError(ValueError):
    """A quantization request that cannot be honoured (wrong source, unsupported combination)."""


@dataclass(frozen=True)
class QuantOptions:
    method: Method
    block_size: int = 32  # int4 / int8 only (a GGUF's blocks are what they are: 32)
    accuracy_level: int = 0  # MatMulNBits: 0 = float32 activations (exact), 4 = int8 activations (faster)
    symmetric: bool = False  # int4 / int8: codes around a fixed zero point instead of per-block min/max
    lm_head_bits: int = 8  # int4 / int8: 8 (used at accuracy_level 4 only) or 4 (fast at both levels)
    thresholds: quality.QualityThresholds = field(default_factory=quality.QualityThresholds)

    def cache_variant(self) -> str:
        t = self.thresholds
        head = "" if self.lm_head_bits == 8 else f"|head{self.lm_head_bits}"
        return (f"q13v3|{self.method}|bs{self.block_size}|acc{self.accuracy_level}|sym{int(self.symmetric)}"
                f"|ppl{t.max_perplexity_increase}|agree{t.min_greedy_agreement}{head}")


def _reference(weights: LlamaWeights) -> dict[str, Any]:
    ref = {f"layers.{i}.{k}": layer[k] for i, layer in enumerate(weights.layers) for k in _LINEARS}
    ref["lm_head"] = weights.lm_head
    ref["embed"] = weights.embed_tokens
    return ref


def quantize_weights(
    weights: LlamaWeights, options: QuantOptions, source_kind: str, gguf_path: Path | None,
) -> tuple[dict[str, QuantLinear], dict[str, str]]:
    """``({layer key: QuantLinear}, {layer key kept in float32: why})`` for `weights`, as at accuracy_level 4
    (`for_level` drops what another level cannot run fast)."""
    level = options.accuracy_level
    if level not in (0, 4):
        raise QuantError(f"accuracy_level must be 0 (float32 activations) or 4 (int8 activations), not {level}")
    if options.method == "gguf":
        if source_kind != "gguf" or gguf_path is None:
            raise QuantError(
                f"--quantize gguf keeps a GGUF file's own blocks, but this source is a {source_kind} source: "
                "use --quantize int4 or int8"
            )
        quantized, kept = gguf_repack.repack_gguf_linears(
            gguf_path, weights.num_layers, weights.num_heads, weights.num_kv_heads, _reference(weights), lm_head=True,
        )
    else:
        bits = 4 if options.method == "int4" else 8
        if options.lm_head_bits not in (4, 8):
            raise QuantError(f"--lm-head-bits must be 4 or 8, not {options.lm_head_bits}")
        if bits == 8 and level != 4:
            raise QuantError("--quantize int8 needs --accuracy-level 4 (onnxruntime's CPU MatMulNBits has no fast "
                             "8-bit kernel for float activations)")
        quantized, kept = {}, {}
        for key, weight in _reference(weights).items():
            if key == "lm_head":  # 8-bit: used at accuracy_level 4 only (see for_level); 4-bit: at both
                quantized[key] = quantize_rtn(weight, options.lm_head_bits, options.block_size, options.symmetric)
            elif key == "embed":  # 8-bit rows, whatever the level (a Gather, no activations involved)
                quantized[key] = quantize_rtn(weight, 8, options.block_size, symmetric=True)
            elif weight.shape[1] % options.block_size:
                kept[key] = f"K={weight.shape[1]} is not a multiple of block size {options.block_size}"
            else:
                quantized[key] = quantize_rtn(weight, bits, options.block_size, options.symmetric)
    return quantized, kept


def for_level(quantized: dict[str, QuantLinear], level: int) -> tuple[dict[str, QuantLinear], dict[str, str]]:
    """The layers to write at `level`: 8-bit blocks only at accuracy_level 4 (else they stay float32)."""
    if level == 4:
        return dict(quantized), {}
    kept = {k: f"{q.source_type} (8-bit) blocks need accuracy_level 4; kept float32"
            for k, q in quantized.items() if q.bits == 8 and k != "embed"}
    return {k: q for k, q in quantized.items() if k not in kept}, kept


def summary(weights: LlamaWeights, options: QuantOptions, kept: dict[str, str]) -> dict[str, Any]:
    """The manifest's ``quantization`` section (without the quality report)."""
    written = set(llama_graph.quantized_layer_keys(weights))
    for key in set(weights.quantized) - written:  # e.g. q quantized but v not: the packed qkv stays float
        kept.setdefault(key, "its packed q|k|v partner layers are not quantized alike; kept float32")
    types = Counter(weights.quantized[k].source_type for k in written)
    qbytes = sum(weights.quantized[k].nbytes() for k in written)
    return {
        "method": options.method,
        "block_size": 32 if options.method == "gguf" else options.block_size,
        "accuracy_level": options.accuracy_level,
        **({} if options.method == "gguf" else {"symmetric": options.symmetric, "lm_head_bits": options.lm_head_bits}),
        "layers": dict(sorted(types.items())),
        "float32_layers": dict(sorted(kept.items())),
        "quantized_weight_bytes": qbytes,
        "embeddings": weights.quantized["embed"].source_type if "embed" in written else "float32",
    }


def quality_report(
    weights: LlamaWeights, candidates: dict[str, QuantLinear], spec: dict[str, Any], folder: Path,
    options: QuantOptions,
) -> dict[str, Any]:
    """Perplexity of fp32 and of the quantized weights at accuracy_level 0 and 4, and greedy agreement with
    fp32 at both; the figures for the chosen level are the ones the gate checks."""
    ids = quality.prose_ids(folder / "tokenizer.json")
    golden = folder / "golden.json"
    report: dict[str, Any] = {"text": quality.PROSE_FILE.name, "text_tokens": len(ids)}
    with tempfile.TemporaryDirectory(prefix="realizar-quality-") as tmp:
        fp32 = Path(tmp) / "fp32" / "model.onnx"
        fp32.parent.mkdir()
        llama_graph.build_fused_llama_graph(replace(weights, quantized={}), fp32, all_logits=True)
        ppl = quality.perplexity(fp32, spec, ids)
        report.update(perplexity_fp32=ppl["perplexity"], scored_tokens=ppl["scored_tokens"], context=ppl["context"])
        fp32.unlink()
        levels = {}
        for level in dict.fromkeys((options.accuracy_level, 0, 4)):
            quantized, _ = for_level(candidates, level)
            path = Path(tmp) / f"level{level}" / "model.onnx"
            path.parent.mkdir()
            llama_graph.build_fused_llama_graph(replace(weights, quantized=quantized, accuracy_level=level), path,
                                                all_logits=True)
            agreement = quality.greedy_agreement(path, spec, golden)
            levels[str(level)] = {"perplexity": quality.perplexity(path, spec, ids)["perplexity"],
                                  "greedy_agreement": agreement["agreement"], "greedy_tokens": agreement["tokens"]}
            for name in ("model.onnx", "model.onnx_data"):
                (path.parent / name).unlink(missing_ok=True)
    chosen = levels[str(options.accuracy_level)]
    report.update(perplexity=chosen["perplexity"], greedy_agreement=chosen["greedy_agreement"],
                  greedy_tokens=chosen["greedy_tokens"], by_accuracy_level=levels,
                  thresholds=quality.thresholds_dict(options.thresholds))
    ratio = report["perplexity"] / report["perplexity_fp32"]
    print(
        f"  quality ({options.method}, accuracy_level {options.accuracy_level}): perplexity {report['perplexity']:.3f} "
        f"vs fp32 {report['perplexity_fp32']:.3f} ({ratio - 1:+.1%}) on {report['scored_tokens']} tokens; greedy "
        f"tokens agree with fp32 for {chosen['greedy_tokens']} ({chosen['greedy_agreement']:.0%}); "
        + ", ".join(f"level {k}: ppl {v['perplexity']:.3f} agree {v['greedy_agreement']:.0%}" for k, v in levels.items()),
        file=sys.stderr,
    )
    return report
