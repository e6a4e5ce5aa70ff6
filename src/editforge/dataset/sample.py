"""The unit every dataset tool works on: one edit example, wherever it was read from.

A `Sample` is a target image (what the model should produce), 0-3 control images (what it is given,
in order) and the instruction. Paths are absolute; `key` says where the sample came from ("row 12",
"line 3", "cat.png") so every message can point the user at it. Problems found while reading (a path
that leaves the dataset folder, a URL, a number where a path belongs: `editforge.paths.PathPolicy`,
the rule synth applies too) travel with the sample: `check` reports them and `export` leaves such
samples out, so one bad row never stops the rest.
"""

from __future__ import annotations

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
