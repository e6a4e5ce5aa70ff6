"""What a run draws for people: the loss curve's axes and the labelled validation grid."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from editforge.train.logs import BOTTOM, LEFT, TICK, loss_curve


def dark(pixels: np.ndarray) -> np.ndarray:
    return pixels.min(axis=-1) < 100


def test_the_loss_curve_has_ticks_and_numbers_on_both_axes(tmp_path):
    losses = [2.0 * math.exp(-i / 40) + 0.1 for i in range(120)]
    loss_curve(losses, tmp_path / "loss.png")
    pixels = np.asarray(Image.open(tmp_path / "loss.png").convert("RGB"))
    height = pixels.shape[0]
    y_ticks = np.nonzero(dark(pixels[:, LEFT - TICK:LEFT]).all(axis=1))[0]  # short lines left of the frame
    assert len(y_ticks) == 5, y_ticks  # low, high and three between
    x_ticks = np.nonzero(dark(pixels[height - BOTTOM + 1:height - BOTTOM + TICK, :]).all(axis=0))[0]
    assert len(x_ticks) >= 4, x_ticks  # step 1 and round steps (20, 40, ... 120)
    assert dark(pixels[:, :LEFT - TICK - 1]).sum() > 100  # the numbers beside the y ticks
    assert dark(pixels[height - BOTTOM + TICK + 2:, LEFT:]).sum() > 100  # ... and under the x ticks


def test_the_validation_grid_labels_each_picture(tmp_path):
    from editforge.train.validation import LABEL_HEIGHT, grid

    colours = ["red", "green", "blue"]
    sheet = grid([Image.new("RGB", (64, 32), c) for c in colours], 32, ["control 1", "preview", "reference"])
    pixels = np.asarray(sheet)
    assert sheet.height == 32 + LABEL_HEIGHT
    strips, x = [], 0
    for colour in colours:  # each picture as it was, and its own label under it
        width = np.nonzero((pixels[0] == np.asarray(Image.new("RGB", (1, 1), colour))[0, 0]).all(axis=1))[0]
        assert len(width) == 64 and width[0] >= x
        strip = pixels[32:, width[0]:width[-1] + 1]
        assert dark(strip).sum() > 20
        strips.append(strip)
        x = width[-1]
    assert not np.array_equal(strips[0], strips[1]) and not np.array_equal(strips[1], strips[2])
