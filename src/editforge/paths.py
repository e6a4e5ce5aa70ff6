"""Where an image path written in a workbook or a dataset file may point: one rule for every tool.

`editforge synth`, the review app and the dataset tools (check, export, import, training data) all
read paths that someone else wrote, so they judge them the same way, through one `PathPolicy`:

- a path must be text (a number or a list in a path field is refused) and not a URL;
- a relative path is taken from the base dir (the workbook's or the dataset file's folder);
- **the rule for absolute paths:** an absolute path is accepted when it lies inside the base dir,
  exactly like the relative path it equals; outside it only with `allow_outside`;
- it is the *resolved* path that is judged: `..` climbing out, and a symlink inside the base dir
  that points elsewhere, leave the base dir like an absolute path elsewhere does.

A downloaded workbook or dataset thus cannot make synth read, or an export copy into a training
set, a file of this machine outside the folder the user pointed EditForge at.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Any

from editforge.files import portable_path

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class BadPath(Exception):
    """A path that is not usable; the message is the reason, for a row's status or a sample's problems."""


class PathPolicy:
    """Path text -> (absolute path, normalized key), confined to `base` unless `allow_outside`.

    Keys are what a cell should hold: relative to the base dir with forward slashes, or absolute
    for an allowed outside path. `key` is pure string work (it runs for every cell of big sheets);
    `resolve` also follows symlinks, for the paths that are about to be read.
    """

    def __init__(self, base: str | os.PathLike, *, allow_outside: bool = False):
        self.base = Path(os.path.abspath(base))
        self.allow_outside = allow_outside
        self._base = self.base.as_posix().rstrip("/")
        self._real = os.path.realpath(self.base)
        # the base dir may be reached through a symlink: an absolute path may name either spelling
        self._prefixes = {self._base, Path(self._real).as_posix().rstrip("/")}

    def key(self, value: Any) -> str:
        text = _text(value)
        path, absolute = portable_path(text)
        if not absolute:
            relative = posixpath.normpath(path)
            if relative != ".." and not relative.startswith("../"):
                return relative
            path = f"{self._base}/{path}"
        full = posixpath.normpath(path)
        for prefix in self._prefixes:
            if full.startswith(prefix + "/"):
                return full[len(prefix) + 1:]
        if not self.allow_outside:
            raise BadPath(f"path leaves the base dir {self.base} (use `allow_outside=True`): {text}")
        return full

    def resolve(self, value: Any) -> tuple[Path, str]:
        """(absolute path, key); refuses a path whose real location (symlinks followed) is outside."""
        key = self.key(value)
        path = self.base / key  # an absolute key replaces the base
        if not self.allow_outside and not self.inside(path):
            raise BadPath(f"path leaves the base dir {self.base} through a symlink (use `allow_outside=True`): "
                          f"{_text(value)}")
        return path, key

    def inside(self, path: str | os.PathLike) -> bool:
        """Whether `path`, symlinks followed, is inside the base dir."""
        real = os.path.realpath(path)
        return real != self._real and real.startswith(self._real.rstrip(os.sep) + os.sep)

    def cell_value(self, path: str | os.PathLike) -> str:
        """What a cell holds for `path`: relative with forward slashes inside the base dir, else absolute."""
        full = Path(os.path.abspath(path))
        if self.base in full.parents:
            return full.relative_to(self.base).as_posix()
        return full.as_posix()

    def sample_path(self, value: Any, problems: list[str]) -> Path:
        """For readers that collect problems instead of failing: the path, and why it is unusable."""
        try:
            return self.resolve(value)[0]
        except BadPath as exc:
            problems.append(str(exc))
            return Path(str(value))


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise BadPath(f"not a path: {value!r} ({type(value).__name__}, not text)")
    if _URL.match(value.strip()):
        raise BadPath(f"URL instead of a file: {value.strip()} (download it first)")
    return value
