"""Weights as onnxruntime's ``MatMulNBits`` blocks (com.microsoft): the data, the packing and its definition.

``MatMulNBits`` computes ``Y = A @ W.T`` with ``W [N, K]`` stored blockwise along K:

    B            uint8 [N, K / block, block * bits / 8]   codes; 4-bit: element 2i in the low nibble of byte i
    scales       float [N * K / block]
    zero_points  uint8 [N * ceil(K / block * bits / 8)]   optional, packed like B; absent = 2 ** (bits - 1)
    W[n, b * block + j] = (code - zero_point[n, b]) * scales[n, b]

Some formats (GGUF Q4_1, the k-quants) store ``code * scale + offset`` instead. ``MatMulNBits`` accepts float
zero points, but onnxruntime's CPU kernel then dequantizes the whole matrix on every call (measured 12x
slower than fp32 for 4 bits; 8 bits with float zero points is refused). So an offset is carried separately:
``codes`` with zero point 0 in ``MatMulNBits`` plus ``block_sums(A) @ offsets.T`` (``offsets [N, K / block]``,
a 1/32-size fp32 MatMul), the same split llama.cpp's own Q4_1 dot product makes. The weights the graph
computes with are then ``code * scale + offset`` exactly as the GGUF defines them; only the order of the
float additions in the matrix product differs.

Measured on this CPU (onnxruntime 1.32, K=1152, N=3072, batch 1, one thread; fp32 MatMul = 1.0):
4-bit 1.9x (accuracy_level 0) / 5.5x (accuracy_level 4); 8-bit 0.05x (level 0: no fp32 kernel) / 2.8x
(level 4). So 8-bit blocks are only used at accuracy_level 4; at level 0 an 8-bit layer stays fp32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["QuantLinear", "concat_rows", "dequantize", "pack_codes", "quantize_rtn", "unpack_codes"]


@dataclass
class QuantLinear:
    """One linear layer's weight ``[N, K]`` in ``MatMulNBits`` form (plus an optional per-block offset)."""

    bits: int  # 4 or 8
    block_size: int
    n: int  # output features
    k: int  # input features
    codes: np.ndarray  # uint8 [N, K / block, block] unpacked codes in [0, 2 ** bits)
    scales: np.ndarray  # float32 [N, K / block]
    zero_points: np.ndarray | None  # uint8 [N, K / block]; None = the operator's default 2 ** (bits - 1)
    offsets: np.ndarray | None = None  # float32 [N, K / block], added to every weight of the block
    source_type: str = ""  # "Q4_1", "int4-asym", ... for the export report

    @property
    def blocks(self) -> int:
        return self.k // self.block_size

    def packed_b(self) -> np.ndarray:
        """``B`` as the operator takes it: uint8 ``[N, K / block, block * bits / 8]``."""
        return pack_codes(self.codes, self.bits)

    def packed_zero_points(self) -> np.ndarray | None:
        """uint8 ``[N * ceil(blocks * bits / 8)]`` (4-bit: two blocks per byte, low nibble first)."""
        if self.zero_points is None:
            return None
        zp = self.zero_points
        if self.bits == 4:
            if zp.shape[1] % 2:
                zp = np.concatenate([zp, np.zeros((zp.shape[0], 1), np.uint8)], axis=1)
            zp = (zp[:, 0::2] | (zp[:, 1::2] << 4)).astype(np.uint8)
        return np.ascontiguousarray(zp).reshape(-1)

    def nbytes(self) -> int:
        extra = 0 if self.zero_points is None else self.packed_zero_points().nbytes  # type: ignore[union-attr]
        extra += 0 if self.offsets is None else self.offsets.nbytes
        return self.codes.size * self.bits // 8 + self.scales.nbytes + extra


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes ``[N, blocks, block]`` -> the operator's bytes ``[N, blocks, block * bits / 8]``."""
    codes = codes.astype(np.uint8)
    if bits == 8:
        return np.ascontiguousarray(codes)
    if bits == 4:
        return np.ascontiguousarray(codes[..., 0::2] | (codes[..., 1::2] << 4))
    raise ValueError(f"bits must be 4 or 8, not {bits}")


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of `pack_codes`: the operator's bytes -> codes ``[N, blocks, block]``."""
    if bits == 8:
        return packed.astype(np.uint8)
    out = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,), np.uint8)
    out[..., 0::2] = packed & 0x0F
    out[..., 1::2] = packed >> 4
    return out


def dequantize(q: QuantLinear) -> np.ndarray:
    """The float32 ``[N, K]`` weight the graph computes with, by the operator's definition (+ offsets)."""
    zp = np.float32(2 ** (q.bits - 1)) if q.zero_points is None else q.zero_points.astype(np.float32)[..., None]
    w = (q.codes.astype(np.float32) - zp) * q.scales[..., None]
    if q.offsets is not None:
        w = w + q.offsets[..., None]
    return w.reshape(q.n, q.k).astype(np.float32)


def concat_rows(parts: list[QuantLinear]) -> QuantLinear | None:
    """Stack layers along N (q|k|v, gate|up); None when their formats differ."""
    first = parts[0]
    same = all(
        (p.bits, p.block_size, p.k, p.zero_points is None, p.offsets is None)
        == (first.bits, first.block_size, first.k, first.zero_points is None, first.offsets is None)
        for p in parts
    )
    if not same:
        return None

    def cat(name: str) -> np.ndarray | None:
        arrays = [getattr(p, name) for p in parts]
        return None if arrays[0] is None else np.concatenate(arrays, axis=0)

    return QuantLinear(
        bits=first.bits, block_size=first.block_size, n=sum(p.n for p in parts), k=first.k,
        codes=cat("codes"), scales=cat("scales"), zero_points=cat("zero_points"),  # type: ignore[arg-type]
        offsets=cat("offsets"), source_type="+".join(dict.fromkeys(p.source_type for p in parts)),
    )


def quantize_rtn(weight: np.ndarray, bits: int, block_size: int, symmetric: bool) -> QuantLinear:
    """Round-to-nearest blockwise quantization of a float ``[N, K]`` weight (what onnxruntime's default
    MatMulNBits quantizer does): symmetric = codes around the default zero point, no zero-point input;
    asymmetric = per-block min/max with a uint8 zero point."""
    n, k = weight.shape
    if k % block_size:
        raise ValueError(f"K={k} is not a multiple of block size {block_size}")
    w = weight.astype(np.float32).reshape(n, k // block_size, block_size)
    levels = 2**bits - 1
    mid = 2 ** (bits - 1)
    if symmetric:
        absmax = np.abs(w).max(axis=-1)
        scales = (absmax / (mid - 1)).astype(np.float32)  # codes mid-(mid-1) .. mid+(mid-1)
        safe = np.where(scales == 0, np.float32(1), scales)
        codes = np.clip(np.rint(w / safe[..., None]) + mid, 0, levels).astype(np.uint8)
        zero_points = None
    else:
        lo = np.minimum(w.min(axis=-1), 0)
        hi = np.maximum(w.max(axis=-1), 0)
        scales = ((hi - lo) / levels).astype(np.float32)
        safe = np.where(scales == 0, np.float32(1), scales)
        zero_points = np.clip(np.rint(-lo / safe), 0, levels).astype(np.uint8)
        codes = np.clip(np.rint(w / safe[..., None]) + zero_points[..., None], 0, levels).astype(np.uint8)
    kind = f"int{bits}-{'sym' if symmetric else 'asym'}"
    return QuantLinear(bits, block_size, n, k, codes, scales, zero_points, None, kind)
