"""GGUF blocks repacked into MatMulNBits compute with exactly the file's weights (synthetic GGUFs, no model).

Each quant type is written with the `gguf` package into a small file, read back through the exporter's
repack, and checked three ways: the operator's own dequantization of the repacked inputs equals
`gguf.quants.dequantize` (bit for bit, or within one rounding for Q4_1's ``code * d + m``); onnxruntime's
MatMulNBits run on the identity matrix returns those same weights; and a real activation gives the fp32
MatMul's result to float accumulation error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from realizar_ort.export import gguf_repack, llama_graph
from realizar_ort.export.quant_blocks import QuantLinear, dequantize, pack_codes, quantize_rtn, unpack_codes

gguf = pytest.importorskip("gguf")
N, K = 48, 96  # 3 blocks of 32 along K


def _write_gguf(path: Path, tensors: dict[str, tuple[np.ndarray, str]]) -> dict[str, np.ndarray]:
    """Write float [N, K] weights quantized to the named types; return gguf's own dequantization of each."""
    writer = gguf.GGUFWriter(str(path), "llama")
    expected = {}
    for name, (weight, qtype) in tensors.items():
        kind = gguf.GGMLQuantizationType[qtype]
        data = gguf.quants.quantize(weight, kind)
        writer.add_tensor(name, data, raw_dtype=kind)
        expected[name] = gguf.quants.dequantize(data, kind).astype(np.float32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


def _weights(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N, K)).astype(np.float32) * 0.05
    w[0, :32] = 0.0  # an all-zero block (d = 0)
    w[1, 32:64] = 0.3  # a constant block (Q4_1: d = 0, m = 0.3)
    w[2, :] += 0.2  # an all-positive row (Q4_1 offsets far from zero)
    return w


def _run_linear(quant: QuantLinear, x: np.ndarray, level: int = 0) -> np.ndarray:
    """x @ W.T through the exporter's own MatMulNBits node(s)."""
    g = llama_graph._Graph()
    llama_graph._linear(g, "x", "/linear", "w", lambda: np.zeros((quant.k, quant.n), np.float32), quant, level, "y")
    graph = helper.make_graph(
        g.nodes, "linear", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "s", quant.k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "s", quant.n])], g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x[None].astype(np.float32)})[0][0]


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1", "Q8_0"])
def test_repacked_blocks_are_the_files_own_weights(tmp_path: Path, qtype: str) -> None:
    weight = _weights(1)
    expected = _write_gguf(tmp_path / "m.gguf", {"blk.0.ffn_down.weight": (weight, qtype)})["blk.0.ffn_down.weight"]
    tensor = next(t for t in gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors if t.name == "blk.0.ffn_down.weight")
    quant = gguf_repack.read_gguf_block(np.asarray(tensor.data), qtype, N, K)

    got = dequantize(quant)  # the operator's definition applied to the repacked inputs
    if qtype == "Q4_1":  # code * d + m, one float rounding (the order differs from gguf's)
        np.testing.assert_allclose(got, expected, rtol=0, atol=float(np.spacing(np.abs(expected)).max()))
        assert quant.offsets is not None and np.any(quant.offsets != 0)
    else:
        np.testing.assert_array_equal(got, expected)
    # what onnxruntime actually multiplies by: identity in -> W.T out (every output is one product)
    through_ort = _run_linear(quant, np.eye(K, dtype=np.float32))
    np.testing.assert_allclose(through_ort, expected.T, rtol=0, atol=float(np.spacing(np.abs(expected)).max()))
    if qtype != "Q4_1":
        np.testing.assert_array_equal(through_ort, expected.T)
    # a real activation: same result as an fp32 MatMul with gguf's weights, to accumulation error
    x = np.random.default_rng(2).standard_normal((5, K)).astype(np.float32)
    np.testing.assert_allclose(_run_linear(quant, x), x @ expected.T, rtol=1e-5, atol=1e-5)


def test_repack_undoes_the_rotary_row_permutation_like_transformers(tmp_path: Path) -> None:
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    heads, kv_heads, head_dim = 2, 1, 16
    hidden = heads * head_dim * 3  # K = 96
    q_w = np.random.default_rng(3).standard_normal((heads * head_dim, hidden)).astype(np.float32)
    k_w = np.random.default_rng(4).standard_normal((kv_heads * head_dim, hidden)).astype(np.float32)
    files = _write_gguf(tmp_path / "m.gguf", {"blk.0.attn_q.weight": (q_w, "Q8_0"), "blk.0.attn_k.weight": (k_w, "Q4_0")})
    unpermute = LlamaTensorProcessor()._reverse_permute_weights
    reference = {
        "layers.0.q": unpermute(files["blk.0.attn_q.weight"], heads, heads),
        "layers.0.k": unpermute(files["blk.0.attn_k.weight"], heads, kv_heads),
    }
    repacked, kept = gguf_repack.repack_gguf_linears(tmp_path / "m.gguf", 1, heads, kv_heads, reference, lm_head=False)
    assert set(repacked) == {"layers.0.q", "layers.0.k"}
    for key in repacked:
        np.testing.assert_array_equal(dequantize(repacked[key]), reference[key])
    assert all("not in the file" in why for why in kept.values())


def test_a_layer_that_does_not_match_its_reference_is_kept_in_float(tmp_path: Path) -> None:
    weight = _weights(5)
    files = _write_gguf(tmp_path / "m.gguf", {"blk.0.ffn_up.weight": (weight, "Q4_1"), "blk.0.ffn_gate.weight": (weight, "F16")})
    wrong = files["blk.0.ffn_up.weight"].copy()
    wrong[3, 7] += 0.01
    repacked, kept = gguf_repack.repack_gguf_linears(
        tmp_path / "m.gguf", 1, 1, 1, {"layers.0.up": wrong, "layers.0.gate": weight}, lm_head=False,
    )
    assert "layers.0.up" not in repacked and "1 weights differ" in kept["layers.0.up"]
    assert "F16 (not repacked)" in kept["layers.0.gate"]


@pytest.mark.parametrize(("bits", "symmetric"), [(4, True), (4, False), (8, True), (8, False)])
def test_rtn_quantization_round_trips_through_the_operator(bits: int, symmetric: bool) -> None:
    weight = _weights(6)
    quant = quantize_rtn(weight, bits, 32, symmetric)
    assert np.array_equal(unpack_codes(pack_codes(quant.codes, bits), bits), quant.codes)
    deq = dequantize(quant)
    step = quant.scales.max()
    assert np.abs(deq - weight).max() <= step * 0.5001 + 1e-7  # round to nearest: at most half a step off
    level = 4 if bits == 8 else 0  # 8-bit MatMulNBits is only used at accuracy_level 4 (no fp32 kernel)
    through_ort = _run_linear(quant, np.eye(K, dtype=np.float32), level)
    if level == 0:
        np.testing.assert_array_equal(through_ort, deq.T)
    else:  # int8 activations: identity rows quantize exactly, so still the weights to float rounding
        np.testing.assert_allclose(through_ort, deq.T, rtol=1e-6, atol=1e-6)


def test_q8_0_token_embeddings_are_gathered_from_their_blocks(tmp_path: Path) -> None:
    """token_embd as GatherBlockQuantized: the rows onnxruntime returns are gguf's own dequantized rows."""
    vocab = _weights(7)  # 48 tokens x 96
    files = _write_gguf(tmp_path / "m.gguf", {"token_embd.weight": (vocab, "Q8_0")})
    expected = files["token_embd.weight"]
    repacked, _ = gguf_repack.repack_gguf_linears(tmp_path / "m.gguf", 0, 1, 1, {"embed": expected}, lm_head=False)
    g = llama_graph._Graph()
    weights = llama_graph.LlamaWeights(0, 1, 1, K, K, N, 1e-5, expected, expected, np.ones(K, np.float32), [],
                                       np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32), repacked)
    out = llama_graph._embedding(g, weights)
    assert g.nodes[-1].op_type == "GatherBlockQuantized"
    graph = helper.make_graph(g.nodes, "embed", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "s"])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, "s", K])], g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 10
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ids = np.array([[0, 5, 47, 5]], np.int64)
    np.testing.assert_array_equal(session.run(None, {"input_ids": ids})[0][0], expected[ids[0]])


@pytest.mark.parametrize("head_bits", [4, 8])
def test_int4_lm_head_bits_decide_which_accuracy_levels_use_its_blocks(head_bits: int) -> None:
    """A 4-bit LM head runs at accuracy_level 0 too; an 8-bit one only at level 4 (float32 at level 0)."""
    from realizar_ort.export.quantize import QuantOptions, for_level, quantize_weights

    rng = np.random.default_rng(8)
    layer = {key: rng.standard_normal((64, 64)).astype(np.float32) for key in ("q", "k", "v", "o", "gate", "up", "down")}
    vocab = rng.standard_normal((N, 64)).astype(np.float32)
    weights = llama_graph.LlamaWeights(
        num_layers=1, num_heads=2, num_kv_heads=2, head_dim=32, hidden_size=64, vocab_size=N, rms_norm_eps=1e-5,
        embed_tokens=vocab, lm_head=vocab, final_norm=np.ones(64, np.float32), layers=[layer],
        cos_cache=np.ones((8, 16), np.float32), sin_cache=np.zeros((8, 16), np.float32),
    )
    quantized, kept = quantize_weights(weights, QuantOptions("int4", lm_head_bits=head_bits), "builtin", None)
    assert not kept and quantized["lm_head"].bits == head_bits
    np.testing.assert_array_equal(dequantize(quantized["lm_head"]), dequantize(quantize_rtn(vocab, head_bits, 32, False)))
    level0, dropped = for_level(quantized, 0)
    assert ("lm_head" in level0) == (head_bits == 4) and ("lm_head" in dropped) == (head_bits == 8)
    assert "lm_head" in for_level(quantized, 4)[0]


_K_QUANTS = {"Q4_K": (144, (0, 2)), "Q5_K": (176, (0, 2)), "Q6_K": (210, (208,))}  # bytes per 256, float16 fields


def _write_k_quant(path: Path, name: str, qtype: str, n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random k-quant bytes (gguf cannot quantize k-quants) with finite float16 d / dmin; the tensor's bytes
    and gguf's own dequantization of them."""
    size, halves = _K_QUANTS[qtype]
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, k // 256, size), dtype=np.uint8)
    for at in halves:
        data[..., at:at + 2] = rng.uniform(1e-3, 2e-2, (n, k // 256)).astype(np.float16)[..., None].view(np.uint8)
    data = data.reshape(n, -1)
    kind = gguf.GGMLQuantizationType[qtype]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tensor(name, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return data, gguf.quants.dequantize(data, kind).astype(np.float32)


@pytest.mark.parametrize("qtype", ["Q4_K", "Q5_K", "Q6_K"])
def test_k_quant_blocks_are_the_files_own_weights(tmp_path: Path, qtype: str) -> None:
    """Q4_K / Q5_K (codes, d*sc, -dmin*m on 32-weight sub-blocks) and Q6_K (8-bit codes on 16-weight
    sub-blocks): the operator's definition of the repacked inputs is gguf's dequantization bit for bit, and
    onnxruntime's MatMulNBits multiplies by exactly those weights."""
    n, k = 24, 512  # two super-blocks per row
    _, expected = _write_k_quant(tmp_path / "m.gguf", "blk.0.ffn_down.weight", qtype, n, k, seed=9)
    repacked, kept = gguf_repack.repack_gguf_linears(
        tmp_path / "m.gguf", 1, 1, 1, {"layers.0.down": expected}, lm_head=False,
    )
    quant = repacked["layers.0.down"]
    assert "layers.0.down" not in kept and quant.source_type == qtype
    np.testing.assert_array_equal(dequantize(quant), expected)
    assert quant.bits == (4 if qtype == "Q4_K" else 8) and (quant.offsets is None) == (qtype == "Q6_K")
    level = 0 if quant.bits == 4 else 4  # 8-bit blocks are only used at accuracy_level 4
    through_ort = _run_linear(quant, np.eye(k, dtype=np.float32), level)
    if level == 0:  # code * scale + offset: one rounding, in whichever order
        np.testing.assert_allclose(through_ort, expected.T, rtol=0, atol=float(np.spacing(np.abs(expected)).max()))
    else:  # int8 activations: identity rows come back as 127 * (1 / 127): the weights to ~1e-6 of their range
        np.testing.assert_allclose(through_ort, expected.T, rtol=0, atol=1e-6 * float(np.abs(expected).max()))
    x = np.random.default_rng(2).standard_normal((3, k)).astype(np.float32)
    got, want = _run_linear(quant, x, level), x @ expected.T
    if level == 0:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)
    else:  # level 4 quantizes x to int8 per block: relative error of the whole product, not per element
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-2


@pytest.mark.parametrize("offsets", [False, True])
def test_packed_gate_up_computes_what_separate_float_layers_compute(tmp_path: Path, offsets: bool) -> None:
    """gate|up quantized alike become one MatMulNBits (+ one block-offset term) split along N: the logits
    equal those of the same graph with gate and up as separate float MatMuls of the dequantized weights."""
    rng = np.random.default_rng(13)
    layer = {key: (0.1 * rng.standard_normal((64, 64))).astype(np.float32)
             for key in ("q", "k", "v", "o", "gate", "up", "down")}
    layer |= {"input_norm": np.ones(64, np.float32), "post_norm": np.ones(64, np.float32)}
    quantized = {}
    for key in ("gate", "up"):
        quant = quantize_rtn(layer[key], 4, 32, symmetric=not offsets)  # [N, K] = [out, in]
        if offsets:  # Q4_1's form: codes with zero point 0 plus a float offset per block
            quant = QuantLinear(4, 32, quant.n, quant.k, quant.codes, quant.scales, None,
                                rng.uniform(-0.05, 0.05, (quant.n, quant.k // 32)).astype(np.float32), "Q4_1")
        quantized[f"layers.0.{key}"] = quant
    vocab = rng.standard_normal((N, 64)).astype(np.float32)

    def weights(layers: dict, quant: dict) -> llama_graph.LlamaWeights:
        return llama_graph.LlamaWeights(
            num_layers=1, num_heads=2, num_kv_heads=2, head_dim=32, hidden_size=64, vocab_size=N, rms_norm_eps=1e-5,
            embed_tokens=vocab, lm_head=vocab, final_norm=np.ones(64, np.float32), layers=[layers],
            cos_cache=np.ones((16, 16), np.float32), sin_cache=np.zeros((16, 16), np.float32), quantized=quant,
        )

    packed, plain = tmp_path / "packed" / "model.onnx", tmp_path / "plain" / "model.onnx"
    packed.parent.mkdir(), plain.parent.mkdir()
    llama_graph.build_fused_llama_graph(weights(layer, quantized), packed)
    floats = layer | {key: dequantize(quantized[f"layers.0.{key}"]) for key in ("gate", "up")}
    llama_graph.build_fused_llama_graph(weights(floats, {}), plain)
    import onnx

    nodes = {n.name: n for n in onnx.load(str(packed)).graph.node}
    assert "/model/layers.0/mlp/gate_up_proj" in nodes and "/model/layers.0/mlp/gate_proj" not in nodes
    feeds = {"input_ids": np.array([[3, 7, 1, 9, 4]], np.int64), "seqlens_k": np.array([4], np.int32),
             "total_sequence_length": np.array(5, np.int32)}
    for kind in ("key", "value"):
        feeds[f"past_key_values.0.{kind}"] = np.zeros((1, 2, 8, 32), np.float32)
    got, want = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(["logits"], feeds)[0]
                 for p in (packed, plain))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
