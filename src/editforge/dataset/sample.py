"""The unit every dataset tool works on: one edit example, wherever it was read from.

A `Sample` is a target image (what the model should produce), 0-3 control images (what it is given,
in order) and the instruction. Paths are absolute; `key` says where the sample came from ("row 12",
"line 3", "cat.png") so every message can point the user at it. Problems found while reading (a path
that climbs out of the dataset folder) travel with the sample: `check` reports them and `export`
leaves such samples out, so one bad row never stops the rest.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from editforge.errors import EditForgeError
from editforge.files import portable_path

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


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


class PathResolver:
    """Path text from a dataset file -> absolute path, relative ones taken from `base`.

    A relative path that climbs out of `base` (`../../etc/passwd`) is hostile: a downloaded dataset
    must not make `export` copy arbitrary files of this machine into a training set. Absolute paths
    are the dataset author's explicit choice (musubi-tuner writes them) and are kept.
    """

    def __init__(self, base: str | os.PathLike):
        self.base = Path(os.path.abspath(base))

    def resolve(self, text: str, problems: list[str]) -> Path:
        text, absolute = portable_path(text)
        if _URL.match(text):
            problems.append(f"URL instead of a file: {text} (download it first)")
            return Path(text)
        if absolute:
            return Path(os.path.normpath(text))
        path = Path(os.path.normpath(self.base / text))
        if path != self.base and self.base not in path.parents:
            problems.append(f"hostile path {text!r} leaves the dataset folder {self.base}")
        return path

    def relative(self, path: Path) -> str:
        """How a file is written into a table beside `base`: relative inside it, else absolute."""
        path = Path(os.path.abspath(path))
        if self.base in path.parents:
            return path.relative_to(self.base).as_posix()
        return path.as_posix()


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
                             f"{', '.join(have) or 'none'} (map them with --target-column/--control-columns/"
                             "--instruction-column)")
