"""Build a fused ONNX decoder graph for a Llama-architecture model straight from its transformers weights.

Why not only the Optimum export: its graph spells attention out in ~100 small ops per layer and returns
``present = concat(past, new)``, so every decode step copies the whole KV cache. This graph uses
onnxruntime's contrib ops instead, one node per job, the layout onnxruntime-genai's model builder uses:

    Gather(embed) -> per layer:
        [Skip]SimplifiedLayerNormalization (RMSNorm; the Skip form also adds the residual)
        MatMul (packed q|k|v) -> GroupQueryAttention (rotary inside, KV cache written in place)
        MatMul (o_proj) -> SkipSimplifiedLayerNormalization -> MatMul gate, MatMul up, x*sigmoid(x)*up,
        MatMul down
    -> SkipSimplifiedLayerNormalization (final norm) -> each row's last position -> MatMul (LM head)

Graph I/O (the runtime reads the names from the manifest, ``kv_layout = "shared_buffer"``):
    input_ids              int64   [batch, sequence_length]
    seqlens_k              int32   [batch]                  each row's total length (past + new) - 1
    total_sequence_length  int32   []                       max over rows of (past + new)
    past_key_values.{i}.key / .value  float32 [batch, kv_heads, max_sequence_length, head_dim]
    logits                 float32 [batch, 1, vocab]        the last position of each row
    present.{i}.key / .value: the same shape as past. Bind present to the past buffer and
        GroupQueryAttention writes the new positions in place (``past_present_share_buffer``): a decode step
        copies nothing. Row b's cache holds its tokens at positions [0, seqlens_k[b]]: rows need no padding.

Rows of one call are either all decode steps (sequence_length 1), one prompt or prompt chunk (batch 1), or
a batch of first prompts right-padded to one length (``seqlens_k[b]`` = its own length - 1,
``total_sequence_length`` = the padded length): GroupQueryAttention masks each row at its own length, so
the KV cache positions a row owns are bitwise what a pass alone writes, and the LM head reads each row's
own last position.
Export time only (torch/transformers are imported by the caller, weights come in as numpy arrays).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .quant_blocks import QuantLinear, concat_rows

__all__ = ["FusedGraphError", "LlamaWeights", "build_fused_llama_graph", "llama_weights_from_model", "quantized_layer_keys"]

OPSET = 21
MAX_ROTARY_POSITIONS = 131072


class FusedGraphError(RuntimeError):
    """The model has a feature the fused graph does not implement (the Optimum graph still works)."""


@dataclass
class LlamaWeights:
    """Everything the graph needs, as float32 numpy arrays in transformers' own layout ([out, in])."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    rms_norm_eps: float
    embed_tokens: np.ndarray  # [V, H]
    lm_head: np.ndarray  # [V, H]
    final_norm: np.ndarray  # [H]
    layers: list[dict[str, np.ndarray]]  # q, k, v, o, gate, up, down, input_norm, post_norm
    cos_cache: np.ndarray  # [positions, head_dim / 2]
    sin_cache: np.ndarray
    # Linear layers written as MatMulNBits instead of MatMul: "layers.{i}.{q,k,v,o,gate,up,down}", "lm_head";
    # "embed": 8-bit token embeddings read by GatherBlockQuantized.
    quantized: dict[str, QuantLinear] = field(default_factory=dict)
    accuracy_level: int = 0  # MatMulNBits' accuracy_level: 0 = float32 activations, 4 = int8


def llama_weights_from_model(model: Any) -> LlamaWeights:
    """Read a transformers ``LlamaForCausalLM`` (float32, eval) into `LlamaWeights`; refuse what we cannot build."""
    import torch

    config = model.config
    if getattr(config, "model_type", "llama") != "llama":
        raise FusedGraphError(f"the fused graph builds Llama models only, not {config.model_type!r}")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise FusedGraphError("attention_bias / mlp_bias are not supported by the fused graph")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise FusedGraphError(f"hidden_act {config.hidden_act!r} is not supported by the fused graph")
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    def arr(t: Any) -> np.ndarray:
        return t.detach().to(torch.float32).cpu().numpy()

    layers = []
    for layer in model.model.layers:
        attn, mlp = layer.self_attn, layer.mlp
        layers.append({
            "q": arr(attn.q_proj.weight), "k": arr(attn.k_proj.weight), "v": arr(attn.v_proj.weight),
            "o": arr(attn.o_proj.weight), "gate": arr(mlp.gate_proj.weight), "up": arr(mlp.up_proj.weight),
            "down": arr(mlp.down_proj.weight), "input_norm": arr(layer.input_layernorm.weight),
            "post_norm": arr(layer.post_attention_layernorm.weight),
        })
    # Rotary tables from the model's own rotary module (covers rope scaling such as Llama 3's "llama3" type),
    # computed exactly as transformers does (float32 outer product, attention_scaling applied).
    positions = min(config.max_position_embeddings, MAX_ROTARY_POSITIONS)
    with torch.no_grad():
        probe = torch.zeros(1, 1, head_dim, dtype=torch.float32)
        cos, sin = model.model.rotary_emb(probe, torch.arange(positions)[None, :])
    half = head_dim // 2
    return LlamaWeights(
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        num_kv_heads=config.num_key_value_heads,
        head_dim=head_dim,
        hidden_size=config.hidden_size,
        vocab_size=config.vocab_size,
        rms_norm_eps=float(config.rms_norm_eps),
        embed_tokens=arr(model.model.embed_tokens.weight),
        lm_head=arr(model.lm_head.weight),
        final_norm=arr(model.model.norm.weight),
        layers=layers,
        cos_cache=np.ascontiguousarray(arr(cos[0, :, :half])),
        sin_cache=np.ascontiguousarray(arr(sin[0, :, :half])),
    )


class _Graph:
    """Accumulates nodes and initializers with readable names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def weight(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=array.dtype), name))
        return name

    def node(
        self, op: str, inputs: list[str], name: str, outputs: int = 1, domain: str = "",
        unused: tuple[int, ...] = (), **attrs: Any,
    ) -> list[str]:
        """Add a node; outputs listed in `unused` are left unnamed so onnxruntime never materialises them."""
        names = ["" if i in unused else f"{name}/output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, names, name=name, domain=domain, **attrs))
        return names


def _linear(g: _Graph, x: str, name: str, weight_name: str, weight_t: Callable[[], np.ndarray],
            quant: QuantLinear | None, accuracy_level: int, output: str | None = None) -> str:
    """``x @ weight_t()`` as a MatMul, or as MatMulNBits (+ the block-offset term) when `quant` is given (then
    the float weight is never materialised)."""
    if quant is None:
        out = [output] if output else [f"{name}/output_0"]
        g.nodes.append(helper.make_node("MatMul", [x, g.weight(weight_name, weight_t())], out, name=name))
        return out[0]
    zp = quant.packed_zero_points()
    inputs = [x, g.weight(weight_name + ".qweight", quant.packed_b()),
              g.weight(weight_name + ".scales", quant.scales.reshape(-1).astype(np.float32))]
    if zp is not None:
        inputs.append(g.weight(weight_name + ".zero_points", zp))
    attrs = {"K": quant.k, "N": quant.n, "bits": quant.bits, "block_size": quant.block_size,
             "accuracy_level": accuracy_level}
    if quant.offsets is None:
        out = [output] if output else [f"{name}/output_0"]
        g.nodes.append(helper.make_node("MatMulNBits", inputs, out, name=name, domain="com.microsoft", **attrs))
        return out[0]
    (codes,) = g.node("MatMulNBits", inputs, name, domain="com.microsoft", **attrs)
    # + sum over each block of x, times the block's offset: [.., K] -> [.., K / block, block] -> [.., K / block]
    shape = g.weight(weight_name + ".block_shape", np.array([0, 0, -1, quant.block_size], np.int64))
    (blocked,) = g.node("Reshape", [x, shape], f"{name}/offsets/Reshape")
    axes = g.weight(weight_name + ".block_axis", np.array([-1], np.int64))
    (sums,) = g.node("ReduceSum", [blocked, axes], f"{name}/offsets/ReduceSum", keepdims=0)
    offsets = g.weight(weight_name + ".offsets", np.ascontiguousarray(quant.offsets.T.astype(np.float32)))
    (shift,) = g.node("MatMul", [sums, offsets], f"{name}/offsets/MatMul")
    out = [output] if output else [f"{name}/offsets/Add/output_0"]
    g.nodes.append(helper.make_node("Add", [codes, shift], out, name=f"{name}/offsets/Add"))
    return out[0]


def _embedding(g: _Graph, w: LlamaWeights) -> str:
    """Token embeddings: a Gather of float rows, or GatherBlockQuantized of 8-bit blocks (``"embed"``), whose
    rows come out as ``(code - zero_point) * scale`` like MatMulNBits' weights."""
    quant = w.quantized.get("embed")
    if quant is None:
        embed = g.weight("model.embed_tokens.weight", w.embed_tokens)  # [V, H]
        return g.node("Gather", [embed, "input_ids"], "/model/embed_tokens")[0]
    if quant.bits != 8 or quant.offsets is not None:
        raise ValueError("quantized embeddings must be 8-bit blocks without offsets")
    inputs = [g.weight("model.embed_tokens.qweight", quant.codes.reshape(quant.n, quant.k)), "input_ids",
              g.weight("model.embed_tokens.scales", quant.scales.astype(np.float32))]
    if quant.zero_points is not None:
        inputs.append(g.weight("model.embed_tokens.zero_points", quant.zero_points))
    return g.node("GatherBlockQuantized", inputs, "/model/embed_tokens", domain="com.microsoft", gather_axis=0,
                  quantize_axis=1, block_size=quant.block_size, bits=8)[0]


def _packed_qkv(weights: LlamaWeights, i: int) -> QuantLinear | None:
    parts = [weights.quantized.get(f"layers.{i}.{key}") for key in ("q", "k", "v")]
    if any(p is None for p in parts):
        return None
    return concat_rows(parts)  # type: ignore[arg-type]


def _packed_gate_up(weights: LlamaWeights, i: int) -> QuantLinear | None:
    """gate|up as one MatMulNBits when both are quantized alike (one kernel and one activation pass fewer
    per layer; for offset formats one block-offset MatMul and Add fewer too)."""
    parts = [weights.quantized.get(f"layers.{i}.{key}") for key in ("gate", "up")]
    if any(p is None for p in parts) or parts[0].n != parts[1].n:  # type: ignore[union-attr]
        return None
    return concat_rows(parts)  # type: ignore[arg-type]


def quantized_layer_keys(weights: LlamaWeights) -> list[str]:
    """The layer keys the graph really writes as MatMulNBits (q|k|v only when all three are quantized alike)."""
    keys = []
    for i in range(weights.num_layers):
        if _packed_qkv(weights, i) is not None:
            keys += [f"layers.{i}.{k}" for k in ("q", "k", "v")]
        keys += [f"layers.{i}.{k}" for k in ("o", "gate", "up", "down") if f"layers.{i}.{k}" in weights.quantized]
    return keys + [k for k in ("lm_head", "embed") if k in weights.quantized]


def build_fused_llama_graph(weights: LlamaWeights, path: Path, *, all_logits: bool = False) -> None:
    """Write the fused decoder graph (``model.onnx`` + ``model.onnx_data``) to `path`.

    ``all_logits`` gives logits for every position ``[batch, sequence, vocab]`` (for perplexity at export
    time) instead of each row's last one.
    """
    w, g = weights, _Graph()
    q, level = weights.quantized, weights.accuracy_level
    eps = w.rms_norm_eps
    cos = g.weight("cos_cache", w.cos_cache)
    sin = g.weight("sin_cache", w.sin_cache)

    hidden = _embedding(g, w)  # [B, S, H]
    residual = hidden
    for i, layer in enumerate(w.layers):
        p = f"/model/layers.{i}"
        norm_in = g.weight(f"model.layers.{i}.input_layernorm.weight", layer["input_norm"])
        if i == 0:
            (normed,) = g.node("SimplifiedLayerNormalization", [hidden, norm_in], f"{p}/input_layernorm",
                               epsilon=eps, axis=-1, stash_type=1)
        else:  # residual + previous MLP output, then RMSNorm
            normed, _, _, residual = g.node("SkipSimplifiedLayerNormalization", [residual, hidden, norm_in],
                                            f"{p}/input_layernorm", outputs=4, domain="com.microsoft", unused=(1, 2), epsilon=eps)
        qkv = _linear(g, normed, f"{p}/attn/qkv_proj", f"model.layers.{i}.attn.qkv_proj.weight",
                      lambda: np.concatenate([layer["q"], layer["k"], layer["v"]], axis=0).T,  # [H, (N + 2 Kv) * hd]
                      _packed_qkv(w, i), level)
        attn, _, _ = g.node(
            "GroupQueryAttention",
            [qkv, "", "", f"past_key_values.{i}.key", f"past_key_values.{i}.value", "seqlens_k",
             "total_sequence_length", cos, sin],
            f"{p}/attn/GroupQueryAttention", outputs=3, domain="com.microsoft",
            num_heads=w.num_heads, kv_num_heads=w.num_kv_heads, scale=float(w.head_dim**-0.5),
            do_rotary=1, rotary_interleaved=0, local_window_size=-1,
        )
        g.nodes[-1].output[1:] = [f"present.{i}.key", f"present.{i}.value"]
        attn_out = _linear(g, attn, f"{p}/attn/o_proj", f"model.layers.{i}.attn.o_proj.weight", lambda: layer["o"].T,
                           q.get(f"layers.{i}.o"), level)
        norm_post = g.weight(f"model.layers.{i}.post_attention_layernorm.weight", layer["post_norm"])
        normed, _, _, residual = g.node("SkipSimplifiedLayerNormalization", [residual, attn_out, norm_post],
                                        f"{p}/post_attention_layernorm", outputs=4, domain="com.microsoft", unused=(1, 2), epsilon=eps)
        gate_up = _packed_gate_up(w, i)
        if gate_up is not None:  # one MatMulNBits (and one offset term) for both, then split along N
            packed = _linear(g, normed, f"{p}/mlp/gate_up_proj", f"model.layers.{i}.mlp.gate_up_proj.weight",
                             lambda: None, gate_up, level)
            halves = g.weight(f"model.layers.{i}.mlp.gate_up_split", np.array([gate_up.n // 2] * 2, np.int64))
            gate, up = g.node("Split", [packed, halves], f"{p}/mlp/gate_up_split", outputs=2, axis=-1)
        else:
            gate = _linear(g, normed, f"{p}/mlp/gate_proj", f"model.layers.{i}.mlp.gate_proj.weight",
                           lambda: layer["gate"].T, q.get(f"layers.{i}.gate"), level)
            up = _linear(g, normed, f"{p}/mlp/up_proj", f"model.layers.{i}.mlp.up_proj.weight", lambda: layer["up"].T,
                         q.get(f"layers.{i}.up"), level)
        (sig,) = g.node("Sigmoid", [gate], f"{p}/mlp/act_fn/Sigmoid")
        (silu,) = g.node("Mul", [gate, sig], f"{p}/mlp/act_fn/Mul")
        (gated,) = g.node("Mul", [silu, up], f"{p}/mlp/Mul")
        hidden = _linear(g, gated, f"{p}/mlp/down_proj", f"model.layers.{i}.mlp.down_proj.weight", lambda: layer["down"].T,
                         q.get(f"layers.{i}.down"), level)

    final = g.weight("model.norm.weight", w.final_norm)
    (normed,) = g.node("SkipSimplifiedLayerNormalization", [residual, hidden, final], "/model/norm",
                       domain="com.microsoft", epsilon=eps)
    if all_logits:
        _linear(g, normed, "/lm_head/MatMul", "lm_head.weight", lambda: w.lm_head.T, q.get("lm_head"), level, "logits")
        _save(g, w, path, ["batch_size", "sequence_length", w.vocab_size])
        return
    # Only each row's last position feeds the LM head: [B, S, H] -> [B, 1, H]. Row b's last token sits at
    # max(seqlens_k[b] - (total_sequence_length - S), 0) in this call: S - 1 for one prompt (or chunk),
    # 0 for decode steps, and its own length - 1 for a right-padded batch of first prompts.
    (s_len,) = g.node("Shape", ["input_ids"], "/model/last_position/sequence_length", start=1, end=2)  # [1]
    (total,) = g.node("Cast", ["total_sequence_length"], "/model/last_position/total", to=TensorProto.INT64)
    (lengths,) = g.node("Cast", ["seqlens_k"], "/model/last_position/seqlens", to=TensorProto.INT64)  # [B]
    (past,) = g.node("Sub", [total, s_len], "/model/last_position/past")  # [1]
    (index,) = g.node("Sub", [lengths, past], "/model/last_position/index")  # [B]
    zero = g.weight("/model/last_position/zero", np.array(0, np.int64))
    (index,) = g.node("Max", [index, zero], "/model/last_position/clamp")  # padded decode rows: 0
    unsqueeze_axes = g.weight("/model/last_position/axes", np.array([1, 2], np.int64))
    (index,) = g.node("Unsqueeze", [index, unsqueeze_axes], "/model/last_position/unsqueeze")  # [B, 1, 1]
    row_shape = g.weight("/model/last_position/row_shape", np.array([1, 1, w.hidden_size], np.int64))
    (index,) = g.node("Expand", [index, row_shape], "/model/last_position/expand")  # [B, 1, H]
    (last,) = g.node("GatherElements", [normed, index], "/model/last_position", axis=1)  # [B, 1, H]
    _linear(g, last, "/lm_head/MatMul", "lm_head.weight", lambda: w.lm_head.T, q.get("lm_head"), level, "logits")  # [H, V]
    _save(g, w, path, ["batch_size", 1, w.vocab_size])


def _save(g: _Graph, w: LlamaWeights, path: Path, logits_shape: list[Any]) -> None:
    kv_shape = ["batch_size", w.num_kv_heads, "max_sequence_length", w.head_dim]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, ["batch_size"]),
        helper.make_tensor_value_info("total_sequence_length", TensorProto.INT32, []),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, logits_shape)]
    for i in range(w.num_layers):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", TensorProto.FLOAT, kv_shape))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", TensorProto.FLOAT, kv_shape))
    graph = helper.make_graph(g.nodes, "realizar_fused_llama", inputs, outputs, g.initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name="realizar-ort",
    )
    model.ir_version = 10
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=path.name + "_data", size_threshold=1024)
    (path.parent / (path.name + "_data")).chmod(0o644)  # onnx creates it owner-only
