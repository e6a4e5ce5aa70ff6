"""Judge a LoRA, not only the data: held-out pairs edited with and without it, both scored by the judge.

    report = judge_lora("qwen-image-edit-2509", "style.safetensors", "held-out.jsonl", seed=0, group_column="category")
    print(report.lines())

Each held-out sample's controls are edited with its instruction twice, with the LoRA and without it (the same
pipeline, the LoRA's layers switched off; the same seed), and both outputs are scored as `editforge judge`
scores a pair. The report gives the mean score of each with a 95% confidence interval (normal approximation,
mean ± 1.96·sd/√n), and the paired difference (LoRA − base, per sample: the same inputs and seed make it
much tighter than the two intervals suggest), overall and per value of `group_column` (an instruction type).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from editforge.errors import EditForgeError
from editforge.images import open_rgb
from editforge.progress import Progress

Z95 = 1.96


@dataclass(frozen=True)
class Interval:
    n: int
    mean: float
    low: float | None   # None when n < 2: one sample gives no spread
    high: float | None

    @classmethod
    def of(cls, values: list[float]) -> "Interval":
        mean = statistics.fmean(values)
        if len(values) < 2:
            return cls(len(values), mean, None, None)
        half = Z95 * statistics.stdev(values) / math.sqrt(len(values))
        return cls(len(values), mean, mean - half, mean + half)

    def text(self) -> str:
        spread = f" [{self.low:.3f}, {self.high:.3f}]" if self.low is not None else ""
        return f"{self.mean:.3f}{spread}"


@dataclass(frozen=True)
class Comparison:
    base: Interval
    lora: Interval
    difference: Interval  # per sample: LoRA − base

    @classmethod
    def of(cls, base: list[float], lora: list[float]) -> "Comparison":
        return cls(Interval.of(base), Interval.of(lora), Interval.of([b - a for a, b in zip(base, lora)]))


@dataclass
class LoraReport:
    overall: Comparison
    groups: dict[str, Comparison] = field(default_factory=dict)
    base_scores: list[float] = field(default_factory=list)
    lora_scores: list[float] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        def line(name: str, c: Comparison) -> str:
            return (f"{name}: n {c.base.n}, without LoRA {c.base.text()}, with LoRA {c.lora.text()}, "
                    f"difference {c.difference.text()}")

        return [line("all", self.overall), *(line(name, c) for name, c in self.groups.items())]


def judge_lora(model: str, lora: str, pairs: str | Path, *, load=None, generation=None, seed: int = 0,
               group_column: str | None = None, progress: Progress | None = None) -> LoraReport:
    """Edit every held-out sample of `pairs` (any `editforge dataset` source) with and without `lora` on `model`
    (`load`: `LoadOptions`, `generation`: `GenerationOptions`, e.g. the training config's validation settings)
    and compare the judge's scores."""
    import dataclasses

    from editforge.dataset import load_samples
    from editforge.inference.generate import edit
    from editforge.judge.ask import Pair, score_pairs
    from editforge.judge.model import judge_from_pipeline
    from editforge.models.loading import load_pipeline
    from editforge.models.options import LoadOptions

    progress = progress or Progress()
    data = load_samples(pairs)
    usable = [s for s in data.samples if s.controls and not s.problems and s.instruction]
    skipped = data.skipped + [(s.key, "no control image, no instruction, or a bad path")
                              for s in data.samples if s not in usable]
    if not usable:
        raise EditForgeError(f"`pairs` {pairs}: no held-out sample with control images and an instruction")
    if group_column is not None and not any(group_column in s.extra for s in usable):
        raise EditForgeError(f"`group_column` {group_column}: no sample of {Path(pairs).name} has it")
    # Unfused, so the LoRA's layers can be switched off for the base outputs: one pipeline, not two.
    load = dataclasses.replace(load or LoadOptions(), loras=(*(load.loras if load else ()), lora), fuse=False)
    pipe = load_pipeline(model, load)
    judge = judge_from_pipeline(pipe)
    progress.start("judge LoRA", total=len(usable), unit="pair")
    base, with_lora = [], []
    for i, sample in enumerate(usable):
        controls = [open_rgb(p) for p in sample.controls]
        outputs = []
        for enabled in (False, True):
            if enabled:
                pipe.enable_lora()
            else:
                pipe.disable_lora()
            outputs.append(edit(pipe, controls, sample.instruction, seed=seed + i, options=generation))
        scores = score_pairs(judge, [Pair(tuple(controls), out, sample.instruction) for out in outputs],
                             batch_size=2)
        base.append(scores[0])
        with_lora.append(scores[1])
        progress.advance()
    pipe.enable_lora()
    groups: dict[str, list[int]] = {}
    if group_column is not None:
        for i, sample in enumerate(usable):
            groups.setdefault(sample.extra.get(group_column, ""), []).append(i)
    return LoraReport(
        overall=Comparison.of(base, with_lora),
        groups={name: Comparison.of([base[i] for i in idx], [with_lora[i] for i in idx]) for name, idx in groups.items()},
        base_scores=base, lora_scores=with_lora, skipped=skipped)
