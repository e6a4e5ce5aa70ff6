"""The tests' K-quant encoder (tests/kquants.py) writes blocks that gguf's reference decoder reads back as the values it
was given, each within half a step of its sub-block: the format's own bound, plus the rounding of the scales."""

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants

from tests.kquants import QK_K, quantize

# qtype: (values per sub-block, levels above the sub-block's lowest one)
FORMATS = {"Q4_K": (32, 15), "Q5_K": (32, 31), "Q6_K": (16, 31)}


def hard_rows() -> np.ndarray:
    """Rows whose sub-blocks differ a lot, so a scale, minimum or bit stored in the wrong place shows: magnitudes
    2^-8 .. 2^2 per 16 values, sub-blocks shifted all positive or all negative, an all-zero super-block, a constant
    one, a lone spike."""
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((16, 4 * QK_K))
    rows *= 2.0 ** rng.integers(-8, 3, (16, 4 * QK_K // 16)).repeat(16, axis=1)
    rows += rng.choice([-1.0, 0.0, 0.0, 1.0], (16, 4 * QK_K // 32)).repeat(32, axis=1) * np.abs(rows).max(
        axis=1, keepdims=True) / 4
    rows[0, :QK_K] = 0
    rows[1, :QK_K] = -0.3
    rows[2, QK_K:2 * QK_K] = 0
    rows[2, QK_K + 77] = 3.0
    return rows.astype(np.float32)


@pytest.mark.parametrize("name", FORMATS)
def test_kquant_blocks_decode_to_their_values_within_half_a_step(name):
    qtype = GGMLQuantizationType[name]
    size, top = FORMATS[name]
    x = hard_rows()
    data = quantize(x, qtype)
    assert data.dtype == np.uint8 and data.shape == quants.quant_shape_to_byte_shape(x.shape, qtype)
    decoded = quants.dequantize(data, qtype)  # gguf's reference decoder: the layout's reference
    assert decoded.shape == x.shape

    sub = x.reshape(-1, QK_K // size, size)  # (super-blocks, sub-blocks, values)
    error = np.abs(decoded - x).reshape(sub.shape)
    if name == "Q6_K":  # symmetric, d * scale * (q - 32) with q in [0, 63]: 31 steps up, 32 down from 0
        span = np.abs(sub).max(axis=-1)
        unit = np.abs(sub).max(axis=(1, 2)) / (top * 127)  # one step of the 8-bit scales' grid
    else:  # d * scale * q - dmin * m, q in [0, top]: the levels run from a minimum at or below 0 to the largest value
        span = sub.max(axis=-1) - np.minimum(sub.min(axis=-1), 0)
        lowest = -np.minimum(sub.min(axis=(1, 2)), 0)
        unit = (span.max(axis=1) + lowest) / (63 * top)  # one step of the 6-bit scales' grid, and of the minimum's
    # half of the best step (the span over the levels), plus half a step of the scales' grid; fp16 and fp32 rounding
    bound = (span / (2 * top) + unit[:, None] / 2) * (1 + 2 ** -8)
    assert (error.max(axis=-1) <= bound).all(), float((error.max(axis=-1) / bound).max())
    assert (decoded[0, :QK_K] == 0).all()  # an all-zero super-block stays exactly zero


def test_rows_of_no_whole_super_block_are_refused():
    with pytest.raises(ValueError, match="super-blocks of 256"):
        quantize(np.zeros((2, 192), np.float32), GGMLQuantizationType.Q4_K)
