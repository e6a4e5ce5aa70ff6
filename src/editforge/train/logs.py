"""What a run reports: `metrics.jsonl` (one line per step), TensorBoard scalars and images, a loss-curve PNG.

Only the main process writes. The JSONL file is the record a resumed run trims and continues, so it
always reads as one uninterrupted run.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from PIL import Image, ImageDraw


class RunLog:
    def __init__(self, output_dir: Path, *, enabled: bool, resume_step: int = 0):
        self.enabled = enabled
        self.path = output_dir / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        # A resumed run repeats the steps after its checkpoint; drop what the interrupted run logged for them.
        kept = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dependency, but a stripped install should still train
            return
        self.writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=resume_step + 1)

    def step(self, step: int, loss: float, lr: float, grad_norm: float) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps({"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm}) + "\n")
        if self.writer:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)
            self.writer.add_scalar("train/grad_norm", grad_norm, step)

    def images(self, step: int, sheets: list[Image.Image]) -> None:
        if self.enabled and self.writer:
            import numpy as np

            for i, sheet in enumerate(sheets):
                self.writer.add_image(f"validation/{i}", np.asarray(sheet), step, dataformats="HWC")

    def close(self) -> None:
        if self.writer:
            self.writer.close()


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def loss_curve(losses: list[float], path: Path, size: tuple[int, int] = (640, 360)) -> None:
    """Loss per step and its running mean, drawn with PIL (no plotting library needed)."""
    width, height = size
    margin = 40
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([margin, margin // 2, width - margin // 2, height - margin], outline="black")
    if losses:
        low, high = min(losses), max(losses)
        span = (high - low) or 1.0

        def point(i, value):
            x = margin + (width - 1.5 * margin) * i / max(1, len(losses) - 1)
            y = height - margin - (height - 1.5 * margin) * (value - low) / span
            return x, y

        window = max(1, len(losses) // 20)
        running = [0.0, *itertools.accumulate(losses)]  # prefix sums: the running mean in one pass
        smooth = [(running[i + 1] - running[max(0, i - window + 1)]) / (i + 1 - max(0, i - window + 1))
                  for i in range(len(losses))]
        draw.line([point(i, v) for i, v in enumerate(losses)], fill=(160, 190, 230), width=1)
        draw.line([point(i, v) for i, v in enumerate(smooth)], fill=(20, 60, 160), width=2)
        draw.text((margin, 4), f"loss  max {high:.4g}  min {low:.4g}  last(mean) {smooth[-1]:.4g}", fill="black")
        draw.text((margin, height - margin + 6), f"step 1 .. {len(losses)}", fill="black")
    image.save(path)
