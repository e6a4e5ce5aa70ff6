"""Row semantics: which rows of the workbook need which picture, from which inputs.

Rows whose `need_gen` is true (text true/1/yes/y in any case, an Excel TRUE, the number 1):
    empty prompt                         -> skipped
    neither raw nor any ref              -> skipped
    raw and every ref slot filled        -> skipped
    refs only                            -> gen_raw:       all refs in slot order -> raw_image
    raw only                             -> gen_ref:       raw -> first ref slot
    raw and some refs, a slot free       -> gen_extra_ref: raw -> first free ref slot
An input that is missing, or whose path leaves the base dir, fails the row.

Each job carries an identity: a hash of what defines the picture (mode, target, prompt, inputs as
normalized paths) and the row number. The seed and the journal entry hang on it: a row whose inputs
changed is a new job, never given the old result, and two identical rows are two different pictures.
(Content alone would make identical rows collide; the row number alone would miss edits.)
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from editforge.errors import EditForgeError
from editforge.files import portable_path
from editforge.sheet.workbook import REF_KEYS, Workbook

TRUE_TEXTS = {"true", "1", "yes", "y"}


class BadPath(Exception):
    """A cell path that is not usable; the message is the row's failure reason."""


@dataclass(frozen=True)
class Job:
    row: int
    mode: str                      # gen_raw | gen_ref | gen_extra_ref
    prompt: str
    inputs: tuple[Path, ...]       # absolute paths of the input images, in order
    target: str                    # the column key the output goes into
    identity: str


@dataclass(frozen=True)
class RowIssue:
    row: int
    reason: str


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)
    skipped: list[RowIssue] = field(default_factory=list)
    failed: list[RowIssue] = field(default_factory=list)
    referenced: set[str] = field(default_factory=set)  # every image path in the sheet, normalized


def is_true(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value == 1
    text = cell_text(value).lower()
    if text in TRUE_TEXTS:
        return True
    try:
        return float(text) == 1.0  # "1.0" from a CSV written by pandas
    except ValueError:
        return False


def cell_text(value: Any) -> str:
    return "" if value is None else str(value).strip()


class PathResolver:
    """Cell text -> normalized key and absolute path, confined to the base dir unless allowed out.

    Keys are what a cell should hold: relative to the base dir with forward slashes, or absolute for
    an allowed outside path. Pure string work, no pathlib: it runs for every cell of big sheets.
    """

    def __init__(self, base_dir: str | os.PathLike, *, allow_outside: bool = False):
        self.base = Path(os.path.abspath(base_dir))
        self._base = self.base.as_posix().rstrip("/")
        self.allow_outside = allow_outside

    def key(self, text: str) -> str:
        path, absolute = portable_path(text)
        if not absolute:
            relative = posixpath.normpath(path)
            if relative != ".." and not relative.startswith("../"):
                return relative
            path = f"{self._base}/{path}"
        full = posixpath.normpath(path)
        if full.startswith(self._base + "/"):
            return full[len(self._base) + 1:]
        if not self.allow_outside:
            raise BadPath(f"path leaves the base dir {self.base} (use --allow-outside): {text}")
        return full

    def resolve(self, text: str) -> tuple[Path, str]:
        key = self.key(text)
        return self.base / key, key  # an absolute key replaces the base

    def cell_value(self, path: Path) -> str:
        """What a cell holds for `path`."""
        return self.key(str(path))


def check_columns(book: Workbook) -> list[str]:
    """The ref_image keys the sheet has; an error naming the columns synth needs and it lacks."""
    required = [k for k in ("raw_image", "gen_edit_prompt", "need_gen") if k not in book.columns]
    ref_keys = [k for k in REF_KEYS if k in book.columns]
    if required or not ref_keys:
        missing = required or ["ref_image_1"]
        raise EditForgeError(
            f"the header row (row {book.header_row}) of {book.path.name} has no "
            f"{', '.join(missing)} column; rename the header or map it with "
            f"--columns {missing[0]}=<your header>")
    return ref_keys


def plan_workbook(book: Workbook, resolver: PathResolver, *, check_files: bool = True) -> Plan:
    ref_keys = check_columns(book)
    plan = Plan()
    for row, values in book.records(["raw_image", *ref_keys, "gen_edit_prompt", "need_gen"]):
        raw = cell_text(values["raw_image"])
        refs = [cell_text(values[k]) for k in ref_keys]
        _note_references(plan.referenced, resolver, [raw, *refs])
        if not is_true(values["need_gen"]):
            continue
        prompt = cell_text(values["gen_edit_prompt"])
        if not prompt:
            plan.skipped.append(RowIssue(row, "empty prompt"))
            continue
        free = [k for k, text in zip(ref_keys, refs) if not text]
        if raw and len(free) == len(ref_keys):
            mode, sources, target = "gen_ref", [("raw_image", raw)], free[0]
        elif raw and free:
            mode, sources, target = "gen_extra_ref", [("raw_image", raw)], free[0]
        elif raw:
            plan.skipped.append(RowIssue(row, "raw_image and all ref_image slots are filled"))
            continue
        elif len(free) < len(ref_keys):
            mode, target = "gen_raw", "raw_image"
            sources = [(k, text) for k, text in zip(ref_keys, refs) if text]
        else:
            plan.skipped.append(RowIssue(row, "no raw_image and no ref_image"))
            continue
        try:
            inputs = [_input(resolver, key, text, check_files) for key, text in sources]
        except BadPath as exc:
            plan.failed.append(RowIssue(row, str(exc)))
            continue
        definition = json.dumps([row, mode, target, prompt, [key for _, key in inputs]], ensure_ascii=False)
        identity = hashlib.sha256(definition.encode()).hexdigest()[:32]
        plan.jobs.append(Job(row, mode, prompt, tuple(p for p, _ in inputs), target, identity))
    return plan


def _input(resolver: PathResolver, column: str, text: str, check_files: bool) -> tuple[Path, str]:
    try:
        path, key = resolver.resolve(text)
    except BadPath as exc:
        raise BadPath(f"{column}: {exc}") from None
    if check_files and not path.is_file():
        raise BadPath(f"{column}: file not found: {text}")
    return path, key


def _note_references(referenced: set[str], resolver: PathResolver, texts: list[str]) -> None:
    for text in texts:
        if text:
            try:
                referenced.add(resolver.key(text))
            except BadPath:
                pass  # a path outside the base dir cannot name one of our outputs
