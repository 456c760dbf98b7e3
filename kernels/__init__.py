"""Numba kernels (the only numba code in realizar-ort). Importing this package needs numba."""

from .token_mask import (
    advance_token_bytes,
    allocate_scratch,
    allocate_token_bitmask,
    apply_token_bitmask_inplace,
    apply_token_bitmask_inplace_batch,
    fill_next_token_bitmask,
)

__all__ = [
    "advance_token_bytes",
    "allocate_scratch",
    "allocate_token_bitmask",
    "apply_token_bitmask_inplace",
    "apply_token_bitmask_inplace_batch",
    "fill_next_token_bitmask",
]
