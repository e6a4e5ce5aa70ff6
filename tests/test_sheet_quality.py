"""The weight-free quality gate: catches broken outputs, keeps real edits, small ones included."""

from __future__ import annotations

import numpy as np
from PIL import Image

from editforge.sheet.fake import fake_generator
from editforge.sheet.quality import check_quality


def photo(seed: int = 0, size: int = 256) -> Image.Image:
    """Smooth structure plus texture, like a photo rather than white noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([np.sin(6 * x + seed), np.cos(5 * y), np.sin(4 * (x + y))], axis=2) * 80 + 128
    return Image.fromarray(np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8))


def test_a_real_edit_passes():
    report = check_quality(photo(1), [photo(0)])
    assert report.ok and report.reason is None
    assert set(report.metrics) == {"mean", "std", "input_diff_p995"}


def test_a_small_local_edit_still_counts_as_an_edit():
    edited = np.asarray(photo(0)).copy()
    edited[100:140, 100:140] = (250, 10, 10)  # a 2.4% red patch: "add a stop sign"
    assert check_quality(Image.fromarray(edited), [photo(0)]).ok


def test_black_and_nan_outputs_fail():
    assert check_quality(Image.new("RGB", (64, 64))).reason.startswith("black")
    nan = np.full((64, 64, 3), np.nan, dtype=np.float32)
    assert check_quality(nan).reason.startswith("broken")


def test_a_flat_output_fails():
    report = check_quality(Image.new("RGB", (64, 64), (128, 130, 140)))
    assert not report.ok and report.reason.startswith("flat")


def test_an_unedited_output_fails_even_after_a_vae_like_round_trip():
    source = photo(3)
    noisy = np.asarray(source, dtype=np.float32) + np.random.default_rng(1).normal(0, 3, (256, 256, 3))
    roundtrip = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).resize((200, 200))
    report = check_quality(roundtrip, [photo(9), source])
    assert not report.ok and report.reason == "unchanged: output matches input image 2"


def test_the_fake_generator_passes_the_gate():
    generate = fake_generator()
    for seed in range(5):
        image, _ = generate([photo(seed)], "edit", seed)
        assert check_quality(image, [photo(seed)]).ok
