"""GGUF quantized blocks -> `QuantLinear` (``MatMulNBits``) without changing a single weight.

Block layouts (ggml, 32 weights per block, ``d``/``m`` stored as float16):

    Q4_0  d, qs[16]        w[j] = (nibble_j - 8) * d      nibble_j: low nibbles are j = 0..15, high 16..31
    Q4_1  d, m, qs[16]     w[j] = nibble_j * d + m
    Q8_0  d, qs int8[32]   w[j] = qs[j] * d

k-quants (super-blocks of 256 weights, 6-bit sub-block scales and mins against float16 ``d`` / ``dmin``):

    Q4_K  32-weight sub-blocks   w = (d * sc) * q - dmin * mn      q 4-bit
    Q5_K  32-weight sub-blocks   w = (d * sc) * q - dmin * mn      q 5-bit (a high bit from qh)
    Q6_K  16-weight sub-blocks   w = (d * sc) * (q - 32)           q 6-bit, sc int8

Q4_0 and Q8_0 map onto ``MatMulNBits``' default zero point (8 / 128) exactly; Q4_1 becomes codes with zero
point 0 and ``m`` as the block offset (see `quant_blocks`). Q4_K is Q4_1's form on its 32-weight sub-blocks
(scale ``d * sc`` and offset ``-dmin * mn`` are exact float32 products, so the weights match gguf's bit for
bit); Q5_K is the same with 8-bit codes; Q6_K becomes 8-bit codes ``q + 96`` around the default zero point
128 in blocks of 16. 8-bit layers are used at accuracy_level 4 only (see `quantize.for_level`). Other types
(Q2_K, Q3_K, IQ*, F16, ...) are not repacked: `repack_gguf_linears` reports them and the caller keeps those
layers in float32.

llama.cpp's converter permutes the rows of ``attn_q`` / ``attn_k`` (rotary pairs interleaved);
transformers undoes it when it loads a GGUF, and so do we, on whole rows, which moves blocks without
touching them. Every repacked layer is then compared with the float32 weight transformers loaded from the
same file: a layer that does not reproduce it is not repacked (and the report says why).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .quant_blocks import QuantLinear, dequantize

__all__ = ["LINEAR_NAMES", "REPACKABLE", "read_gguf_block", "repack_gguf_linears"]

# our layer key -> the GGUF tensor name ("{i}" = layer index)
LINEAR_NAMES = {
    "q": "blk.{i}.attn_q.weight", "k": "blk.{i}.attn_k.weight", "v": "blk.{i}.attn_v.weight",
    "o": "blk.{i}.attn_output.weight", "gate": "blk.{i}.ffn_gate.weight", "up": "blk.{i}.ffn_up.weight",
    "down": "blk.{i}.ffn_down.weight",
}
REPACKABLE = ("Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")
_BLOCK = 32
_SUPER = 256  # k-quants


def _f16(raw: np.ndarray) -> np.ndarray:
    """Two uint8 columns -> float32 (the float16 values, exactly)."""
    return np.ascontiguousarray(raw).view(np.float16).astype(np.float32)[..., 0]


def _k_scale_min(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K / Q5_K: 12 bytes -> eight 6-bit scales and eight 6-bit mins (ggml's ``get_scale_min_k4``)."""
    d, m, md = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _read_k_quant(data: np.ndarray, qtype: str, n: int, k: int) -> QuantLinear:
    if k % _SUPER:
        raise ValueError(f"K={k} is not a multiple of {_SUPER}")
    sb = data.reshape(n, k // _SUPER, -1)  # [N, super-blocks, bytes]
    if qtype == "Q6_K":  # ql[128] qh[64] scales int8[16] d
        ql, qh = sb[..., 0:128], sb[..., 128:192]
        sc = sb[..., 192:208].view(np.int8).astype(np.float32)
        d = _f16(sb[..., 208:210])
        low = np.stack([ql.reshape(n, -1, 2, 64) & 0x0F, ql.reshape(n, -1, 2, 64) >> 4], axis=2)  # [N, S, 2, 2, 64]
        low = low.transpose(0, 1, 3, 2, 4).reshape(n, -1, 2, 4, 32)  # per 128-half: 4 groups of 32
        high = np.stack([(qh.reshape(n, -1, 2, 32) >> s) & 0x03 for s in (0, 2, 4, 6)], axis=3)  # [N, S, 2, 4, 32]
        q = (low | (high << 4)).reshape(n, -1, 16).astype(np.int16)  # [N, K / 16, 16] in 0..63
        codes = (q + 96).astype(np.uint8)  # (q - 32) == (q + 96) - 128, the default zero point
        scales = (d[..., None] * sc).reshape(n, -1)
        return QuantLinear(8, 16, n, k, codes, scales.astype(np.float32), None, None, qtype)
    d, dmin = _f16(sb[..., 0:2]), _f16(sb[..., 2:4])
    sc, mn = _k_scale_min(sb[..., 4:16])  # [N, S, 8]
    if qtype == "Q4_K":  # d dmin scales[12] qs[128]: 4 chunks of 32 bytes, low nibbles then high
        qs = sb[..., 16:144].reshape(n, -1, 4, 1, 32)
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=3)  # [N, S, 4, 2, 32]
        bits = 4
    else:  # Q5_K: d dmin scales[12] qh[32] qs[128]; bit j of qh[i] is the high bit of sub-block j's element i
        qh = sb[..., 16:48].reshape(n, -1, 1, 32)
        qs = sb[..., 48:176].reshape(n, -1, 4, 1, 32)
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=3).reshape(n, -1, 8, 32)
        q = q | (((qh >> np.arange(8, dtype=np.uint8)[:, None]) & 1) << 4)
        bits = 8
    codes = q.reshape(n, -1, _BLOCK).astype(np.uint8)
    scales = (d[..., None] * sc).reshape(n, -1)
    offsets = -(dmin[..., None] * mn).reshape(n, -1)
    return QuantLinear(bits, _BLOCK, n, k, codes, scales.astype(np.float32), np.zeros(scales.shape, np.uint8),
                       offsets.astype(np.float32), qtype)


def read_gguf_block(data: np.ndarray, qtype: str, n: int, k: int) -> QuantLinear:
    """One GGUF tensor's bytes (``[N, row_bytes]`` uint8) -> `QuantLinear` in the same row order."""
    if qtype in ("Q4_K", "Q5_K", "Q6_K"):
        return _read_k_quant(data, qtype, n, k)
    if k % _BLOCK:
        raise ValueError(f"K={k} is not a multiple of {_BLOCK}")
    blocks = data.reshape(n, k // _BLOCK, -1)
    if qtype in ("Q4_0", "Q4_1"):
        head = 2 if qtype == "Q4_0" else 4
        d = _f16(blocks[..., 0:2])
        qs = blocks[..., head:head + 16]
        codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.uint8)  # ggml order: lows then highs
        if qtype == "Q4_0":
            return QuantLinear(4, _BLOCK, n, k, codes, d, None, None, qtype)
        m = _f16(blocks[..., 2:4])
        return QuantLinear(4, _BLOCK, n, k, codes, d, np.zeros(d.shape, np.uint8), m, qtype)
    if qtype == "Q8_0":
        d = _f16(blocks[..., 0:2])
        codes = (blocks[..., 2:34].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        return QuantLinear(8, _BLOCK, n, k, codes, d, None, None, qtype)
    raise ValueError(f"GGUF type {qtype} is not repacked (supported: {', '.join(REPACKABLE)})")


def _rotary_rows(n: int, heads: int) -> np.ndarray:
    """The row order transformers gives attn_q / attn_k (its ``_reverse_permute_weights``), as indices."""
    rows = np.arange(n)
    dim = n // heads // 2
    return rows.reshape(heads, dim, 2).swapaxes(2, 1).reshape(n)


def _take_rows(q: QuantLinear, rows: np.ndarray) -> QuantLinear:
    def pick(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[rows]

    return QuantLinear(q.bits, q.block_size, q.n, q.k, q.codes[rows], q.scales[rows], pick(q.zero_points),
                       pick(q.offsets), q.source_type)


def repack_gguf_linears(
    path: Path, num_layers: int, num_heads: int, num_kv_heads: int, reference: dict[str, np.ndarray],
    *, lm_head: bool,
) -> tuple[dict[str, QuantLinear], dict[str, str]]:
    """Repack every linear layer of a GGUF file it can: ``({key: QuantLinear}, {key: why not})``.

    Keys are ``"layers.{i}.{q,k,v,o,gate,up,down}"``, ``"lm_head"`` (the tied ``token_embd`` when the
    file has no ``output.weight``) and ``"embed"`` (``token_embd`` when it is Q8_0). `reference` holds transformers' float32 weights under the same keys;
    a repack must reproduce them (to float rounding for offset formats, bit for bit otherwise).
    """
    from gguf import GGUFReader

    tensors = {t.name: t for t in GGUFReader(str(path)).tensors}
    wanted = {f"layers.{i}.{key}": name.format(i=i) for i in range(num_layers) for key, name in LINEAR_NAMES.items()}
    if lm_head:
        wanted["lm_head"] = "output.weight" if "output.weight" in tensors else "token_embd.weight"
    wanted["embed"] = "token_embd.weight"
    repacked: dict[str, QuantLinear] = {}
    kept: dict[str, str] = {}
    for key, name in wanted.items():
        tensor = tensors.get(name)
        if tensor is None:
            kept[key] = f"{name} not in the file"
            continue
        qtype = tensor.tensor_type.name
        if qtype not in REPACKABLE:
            kept[key] = f"{name} is {qtype} (not repacked)"
            continue
        k, n = (int(x) for x in tensor.shape[:2])  # ggml order: ne0 = K (inner), ne1 = N
        quant = read_gguf_block(np.asarray(tensor.data), qtype, n, k)
        if key == "embed" and (quant.bits != 8 or quant.offsets is not None or quant.block_size != _BLOCK):
            kept[key] = f"{name} is {qtype}: only 8-bit embeddings are read as blocks (GatherBlockQuantized)"
            continue
        if key.endswith(".q"):
            quant = _take_rows(quant, _rotary_rows(n, num_heads))
        elif key.endswith(".k"):
            quant = _take_rows(quant, _rotary_rows(n, num_kv_heads))
        why = _differs(quant, reference.get(key))
        if why:
            kept[key] = f"{name} ({qtype}): {why}"
        else:
            repacked[key] = quant
    return repacked, kept


def _differs(quant: QuantLinear, expected: np.ndarray | None) -> str | None:
    """Why `quant` does not compute with `expected`'s weights (None when it does)."""
    if expected is None:
        return "no float32 reference weight to check against"
    got = dequantize(quant)
    if got.shape != expected.shape:
        return f"shape {got.shape} != {expected.shape}"
    if quant.offsets is None:  # (code - zp) * d is exact in float32
        bad = int(np.count_nonzero(got != expected))
    else:  # code * d + m: one rounding, in whichever order
        bad = int(np.count_nonzero(np.abs(got - expected) > np.spacing(np.abs(expected)) * 2))
    return f"{bad} weights differ from the file's own dequantization" if bad else None
