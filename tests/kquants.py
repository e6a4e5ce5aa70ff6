"""GGUF K-quant encoders (Q4_K, Q5_K, Q6_K) for the tests: the `gguf` package (0.17.1) decodes ggml's K-quants but
cannot write them (`gguf.quants.quantize` raises NotImplementedError), and the files users have are mostly K-quants.

The bytes follow ggml's block layouts (`block_q4_K`, `block_q5_K`, `block_q6_K` in ggml-common.h, packed as
ggml-quants.c's `quantize_row_q*_K_ref` packs them); `gguf.quants.dequantize` is the reference they are tested against. The scales
are chosen simply, not by ggml's error-minimising search: each scale is rounded *up* (the fp16 super-block scales and
the 6- or 8-bit sub-block scales alike), so no value falls outside its sub-block's levels and every value decodes to
within half of its sub-block's step.

    data = quantize(weights, GGMLQuantizationType.Q4_K)  # (rows, cols) float32, cols a multiple of 256 -> uint8 rows
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

QK_K = 256  # values per super-block


def quantize(array: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    """`array`'s rows as `qtype` blocks: uint8 of shape (rows, cols / 256 * block bytes), as gguf's writer takes."""
    encode = ENCODERS[qtype]
    rows = np.asarray(array, dtype=np.float32).reshape(-1, array.shape[-1])
    if rows.shape[1] % QK_K:
        raise ValueError(f"{qtype.name} rows are whole super-blocks of {QK_K} values, not {rows.shape[1]}")
    blocks = encode(rows.reshape(-1, QK_K))
    assert blocks.shape[1] == GGML_QUANT_SIZES[qtype][1]
    return blocks.reshape(*array.shape[:-1], -1)


def fp16_up(value: np.ndarray) -> np.ndarray:
    """`value` as the smallest float16 at or above it: a scale that covers every value it must."""
    half = value.astype(np.float16)
    return np.where(half.astype(np.float32) < value, np.nextafter(half, np.float16(np.inf)), half)


def ceil_ratio(value: np.ndarray, unit: np.ndarray, most: int) -> np.ndarray:
    """ceil(value / unit), 0 where the unit is 0, at most `most`: how many units cover `value`."""
    with np.errstate(divide="ignore", invalid="ignore"):
        units = np.where(unit > 0, np.ceil(value / unit), 0)
    return np.clip(units, 0, most).astype(np.uint8)


def levels(x: np.ndarray, step: np.ndarray, low: int, high: int) -> np.ndarray:
    """round(x / step) in [low, high]; 0 where the step is 0 (the sub-block is all zero)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(step > 0, np.rint(x / step), 0)
    return np.clip(q, low, high)


def as_bytes(half: np.ndarray) -> np.ndarray:
    """float16 values as their 2 little-endian bytes each, (n,) -> (n, 2)."""
    return half.astype("<f2").reshape(-1, 1).view(np.uint8)


def scale_min_blocks(x: np.ndarray, top_level: int):
    """Q4_K / Q5_K: 8 sub-blocks of 32, each decoded as `d * ls * q - dmin * lm` with 6-bit ls, lm and q in
    [0, top_level]. Returns (d, dmin, the 12 packed scale bytes, q) for `x` of shape (n, 256)."""
    x = x.reshape(-1, 8, 32)
    mins = -np.minimum(x.min(axis=-1), 0)  # what each sub-block subtracts (ggml keeps the minimum at or below 0)
    dmin = fp16_up(mins.max(axis=-1) / 63)
    lm = ceil_ratio(mins, dmin.astype(np.float32)[:, None], 63)
    offset = dmin.astype(np.float32)[:, None] * lm  # >= mins: the lowest value is covered
    top = x.max(axis=-1) + offset  # the span from the decoded minimum to the largest value
    d = fp16_up(top.max(axis=-1) / (63 * top_level))
    ls = ceil_ratio(top / top_level, d.astype(np.float32)[:, None], 63)  # top_level * step >= top: nothing clipped
    step = d.astype(np.float32)[:, None] * ls
    q = levels(x + offset[..., None], step[..., None], 0, top_level).astype(np.uint8).reshape(-1, QK_K)
    # ggml's get_scale_min_k4 layout: bytes 0-3 the low 6 bits of ls[0:4], 4-7 of lm[0:4]; bytes 8-11 the low 4 bits
    # of ls[4:8] and lm[4:8]; the high 2 bits of ls[4:8] and lm[4:8] in the top bits of bytes 0-3 and 4-7
    scales = np.concatenate([ls[:, :4] | (ls[:, 4:] >> 4) << 6, lm[:, :4] | (lm[:, 4:] >> 4) << 6,
                             (ls[:, 4:] & 0xF) | (lm[:, 4:] & 0xF) << 4], axis=1).astype(np.uint8)
    return d, dmin, scales, q


def low_nibbles(q: np.ndarray) -> np.ndarray:
    """Q4_K / Q5_K `qs`: per 64 values, byte l holds value l in its low and value l + 32 in its high nibble."""
    q = (q & 0xF).reshape(-1, 4, 2, 32)
    return (q[:, :, 0] | q[:, :, 1] << 4).reshape(-1, QK_K // 2)


def encode_q4_k(x: np.ndarray) -> np.ndarray:
    """block_q4_K: d (fp16), dmin (fp16), scales[12], qs[128]."""
    d, dmin, scales, q = scale_min_blocks(x, 15)
    return np.concatenate([as_bytes(d), as_bytes(dmin), scales, low_nibbles(q)], axis=1)


def encode_q5_k(x: np.ndarray) -> np.ndarray:
    """block_q5_K: d, dmin, scales[12], qh[32], qs[128]; bit 2c of qh[l] is the fifth bit of value 64c + l, bit
    2c + 1 that of value 64c + 32 + l."""
    d, dmin, scales, q = scale_min_blocks(x, 31)
    fifth = (q >> 4).reshape(-1, 4, 2, 32)
    shifts = np.arange(8, dtype=np.uint8).reshape(1, 4, 2, 1)
    qh = (fifth << shifts).sum(axis=(1, 2), dtype=np.uint8)
    return np.concatenate([as_bytes(d), as_bytes(dmin), scales, qh, low_nibbles(q)], axis=1)


def encode_q6_k(x: np.ndarray) -> np.ndarray:
    """block_q6_K: ql[128], qh[64], scales[16] (int8), d (fp16); 16 sub-blocks of 16 decoded as `d * sc * (q - 32)`
    with q in [0, 63]. Per 128 values, in quarters k of 32: ql byte l holds the low nibbles of quarter 0 (low) and 2
    (high), byte 32 + l those of quarters 1 and 3; qh byte l holds the high 2 bits of quarter k at bits 2k."""
    x = x.reshape(-1, 16, 16)
    amax = np.abs(x).max(axis=-1)
    d = fp16_up(amax.max(axis=-1) / (31 * 127))  # 31 levels up (32 down) at a scale of at most 127
    sc = ceil_ratio(amax / 31, d.astype(np.float32)[:, None], 127)
    step = d.astype(np.float32)[:, None] * sc
    q = (levels(x, step[..., None], -32, 31) + 32).astype(np.uint8).reshape(-1, 2, 4, 32)
    low = q & 0xF
    ql = np.concatenate([low[:, :, 0] | low[:, :, 2] << 4, low[:, :, 1] | low[:, :, 3] << 4], axis=2)
    shifts = (2 * np.arange(4, dtype=np.uint8)).reshape(1, 1, 4, 1)
    qh = ((q >> 4) << shifts).sum(axis=2, dtype=np.uint8)
    return np.concatenate([ql.reshape(-1, 128), qh.reshape(-1, 64), sc, as_bytes(d)],
                          axis=1)


ENCODERS = {GGMLQuantizationType.Q4_K: encode_q4_k, GGMLQuantizationType.Q5_K: encode_q5_k,
            GGMLQuantizationType.Q6_K: encode_q6_k}
