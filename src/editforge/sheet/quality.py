"""A weight-free quality gate for generated pictures: catches the failures that need no judgement.

    broken     non-finite pixels (NaN latents decode to garbage or, cast to uint8, to black)
    black      almost every pixel near 0
    flat       almost no variation: one color, a blank canvas
    unchanged  every part of the output matches an input image: nothing was edited

"Unchanged" looks at the 99.5th percentile of the per-pixel difference on a 128x128 thumbnail, not
at the mean: a real edit that touches 2% of the picture (remove a logo) has a tiny mean difference
but a large difference somewhere, while a VAE round trip of an unedited input stays small everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from PIL import Image

THUMBNAIL = (128, 128)
BLACK_MEAN = 4.0          # 0-255 scale
FLAT_STD = 3.0
UNCHANGED_P995 = 8.0


@dataclass(frozen=True)
class QualityReport:
    ok: bool
    reason: str | None
    metrics: dict[str, float] = field(default_factory=dict)


def _thumbnail(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.clip(np.nan_to_num(image), 0, 255).astype(np.uint8))
    return np.asarray(image.convert("RGB").resize(THUMBNAIL, Image.BILINEAR), dtype=np.float32)


def check_quality(output: Image.Image | np.ndarray, inputs: Sequence[Image.Image] = ()) -> QualityReport:
    if isinstance(output, np.ndarray) and not np.isfinite(output).all():
        return QualityReport(False, "broken: non-finite pixels", {"finite": 0.0})
    out = _thumbnail(output)
    # spatial variation per channel: a uniform colour has none, whatever its channels are
    metrics = {"mean": float(out.mean()), "std": float(out.std(axis=(0, 1)).max())}
    if metrics["mean"] < BLACK_MEAN:
        return QualityReport(False, f"black: mean {metrics['mean']:.1f}/255", _rounded(metrics))
    if metrics["std"] < FLAT_STD:
        return QualityReport(False, f"flat: std {metrics['std']:.1f}/255", _rounded(metrics))
    if inputs:
        diffs = [float(np.percentile(np.abs(out - _thumbnail(i)).max(axis=2), 99.5)) for i in inputs]
        metrics["input_diff_p995"] = min(diffs)
        if metrics["input_diff_p995"] < UNCHANGED_P995:
            return QualityReport(False, f"unchanged: output matches input image {diffs.index(min(diffs)) + 1}",
                                 _rounded(metrics))
    return QualityReport(True, None, _rounded(metrics))


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 3) for k, v in metrics.items()}
