"""The unit every dataset tool works on: one edit example, wherever it was read from.

A `Sample` is a target image (what the model should produce), 0-3 control images (what it is given,
in order) and the instruction. Paths are absolute; `key` says where the sample came from ("row 12",
"line 3", "cat.png") so every message can point the user at it. Problems found while reading (a path
that leaves the dataset folder, a URL, a number where a path belongs: `editforge.paths.PathPolicy`,
the rule synth applies too) travel with the sample: `check` reports them and `export` leaves such
samples out, so one bad row never stops the rest.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from editforge.errors import EditForgeError


@dataclass(frozen=True)
class Sample:
    key: str
    target: Path
    controls: tuple[Path, ...] = ()
    instruction: str = ""
    # Other columns of the source (a category, a note), as text; carried by formats with a table.
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    problems: tuple[str, ...] = ()
    judge_score: float | None = field(default=None, compare=False, hash=False)  # `editforge judge`'s, if any

    @property
    def images(self) -> tuple[Path, ...]:
        return (self.target, *self.controls)


@dataclass(frozen=True)
class Columns:
    """Which column (folder, for a folder layout) holds the target, the controls and the instruction.

    None means the format's default; each format's module says what that is.
    """

    target: str | None = None
    controls: tuple[str, ...] | None = None
    instruction: str | None = None


@dataclass
class Dataset:
    """What `load_samples` read: the samples, the rows it left out and why, and the source format."""

    source: Path
    format: str
    samples: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (key, reason)


def keep_judged_at_least(dataset: Dataset, min_score: float) -> None:
    """Leave out (into `dataset.skipped`, with the reason) every sample whose judge score is below `min_score`
    or that has none; a source without any judge score is an error: nothing was judged."""
    if not any(s.judge_score is not None for s in dataset.samples):
        raise EditForgeError(f"`min_judge`: {dataset.source.name} has no judge scores; run `editforge judge` on it first")
    kept = []
    for sample in dataset.samples:
        if sample.judge_score is None:
            dataset.skipped.append((sample.key, "not judged (no judge_score)"))
        elif sample.judge_score < min_score:
            dataset.skipped.append((sample.key, f"judge_score {sample.judge_score} below {min_score}"))
        else:
            kept.append(sample)
    dataset.samples = kept


def judge_distribution(samples: list[Sample], bins: int = 10) -> dict | None:
    """How the judge scored `samples`: how many have a score, min / quartiles / max, a histogram of `bins`
    equal bins over [0, 1]; None when none has a score."""
    scores = sorted(s.judge_score for s in samples if s.judge_score is not None)
    if not scores:
        return None
    counts = [0] * bins
    for score in scores:
        counts[min(int(score * bins), bins - 1)] += 1
    quartiles = statistics.quantiles(scores, n=4, method="inclusive") if len(scores) > 1 else [scores[0]] * 3
    return {"judged": len(scores), "not_judged": len(samples) - len(scores), "min": scores[0],
            "q1": round(quartiles[0], 4), "median": round(quartiles[1], 4), "q3": round(quartiles[2], 4),
            "max": scores[-1], "histogram": counts}


def extra_names(samples: list[Sample], reserved) -> list[str]:
    """The extra fields of `samples` in first-seen order, minus names the format uses itself."""
    return [n for n in dict.fromkeys(n for s in samples for n in s.extra) if not reserved(n)]


def one_line(text: str) -> str:
    """Instruction text for formats where a newline means something else (a second caption)."""
    return " ".join(text.split())


def check_columns(source: Path, present: Iterable[str], wanted: Iterable[str]) -> None:
    """A column the source does not have would read as empty in every record (no target, no instruction):
    an error naming what is missing and what is there instead."""
    have = list(dict.fromkeys(present))
    missing = [name for name in dict.fromkeys(wanted) if name not in have]
    if missing:
        raise EditForgeError(f"{source.name} has no column {', '.join(map(repr, missing))}; its columns: "
                             f"{', '.join(have) or 'none'} (map them with `columns.target`, "
                             "`columns.controls`, `columns.instruction`)")
