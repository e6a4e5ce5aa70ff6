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
        for path in (self.path, output_dir / "judge.jsonl"):
            kept = [r for r in read_metrics(path) if r["step"] <= resume_step]
            if kept or path == self.path:
                path.write_text("".join(json.dumps(r) + "\n" for r in kept))
            else:
                path.unlink(missing_ok=True)
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

    def judged(self, step: int, scores: list[float]) -> None:
        """The judge's scores of a validation's previews: `judge.jsonl` (one line per validation) and TensorBoard."""
        if not self.enabled:
            return
        mean = sum(scores) / len(scores)
        with (self.path.parent / "judge.jsonl").open("a") as fh:
            fh.write(json.dumps({"step": step, "judge_score": mean, "scores": scores}) + "\n")
        if self.writer:
            self.writer.add_scalar("validation/judge_score", mean, step)

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


LEFT, RIGHT, TOP, BOTTOM = 60, 16, 24, 36  # margins: room for the tick labels and the title
TICK = 4


def loss_curve(losses: list[float], path: Path, size: tuple[int, int] = (640, 360)) -> None:
    """Loss per step and its running mean on labelled axes, drawn with PIL (no plotting library needed)."""
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = LEFT, width - RIGHT, TOP, height - BOTTOM
    draw.rectangle([left, top, right, bottom], outline="black")
    if losses:
        low, high = min(losses), max(losses)
        span = (high - low) or 1.0
        steps = len(losses)

        def x_of(step: float) -> float:  # step 1 at the left edge, the last step at the right
            return left + (right - left) * (step - 1) / max(1, steps - 1)

        def y_of(value: float) -> float:
            return bottom - (bottom - top) * (value - low) / span

        for value in (low + span * k / 4 for k in range(5)) if high > low else (low,):
            y = y_of(value)
            draw.line([(left - TICK, y), (left, y)], fill="black")
            label = f"{value:.3g}"
            draw.text((left - TICK - 2 - draw.textlength(label), y - 6), label, fill="black")
        for step in _step_ticks(steps):
            x = x_of(step)
            draw.line([(x, bottom), (x, bottom + TICK)], fill="black")
            label = str(step)
            draw.text((x - draw.textlength(label) / 2, bottom + TICK + 2), label, fill="black")

        window = max(1, steps // 20)
        running = [0.0, *itertools.accumulate(losses)]  # prefix sums: the running mean in one pass
        smooth = [(running[i + 1] - running[max(0, i - window + 1)]) / (i + 1 - max(0, i - window + 1))
                  for i in range(steps)]
        draw.line([(x_of(i + 1), y_of(v)) for i, v in enumerate(losses)], fill=(160, 190, 230), width=1)
        draw.line([(x_of(i + 1), y_of(v)) for i, v in enumerate(smooth)], fill=(20, 60, 160), width=2)
        draw.text((left, 6), f"loss (light: per step, dark: mean of {window})   last mean {smooth[-1]:.4g}",
                  fill="black")
        draw.text(((left + right) / 2 - 12, height - 14), "step", fill="black")
    image.save(path)


def _step_ticks(steps: int) -> list[int]:
    """Step 1 and round step numbers (1, 2 or 5 x 10^k apart, at most 6 of them) for the x axis."""
    spacing = next(m * 10**k for k in itertools.count() for m in (1, 2, 5) if steps // (m * 10**k) <= 6)
    return sorted({1, *range(spacing, steps + 1, spacing)})
