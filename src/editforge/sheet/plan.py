"""Row semantics: which rows of the workbook need which picture, from which inputs.

Rows whose `need_gen` is true (text true/1/yes/y in any case, an Excel TRUE, the number 1):
    empty prompt                         -> skipped
    neither raw nor any ref              -> skipped
    raw and every ref slot filled        -> skipped
    refs only                            -> gen_raw:       all refs in slot order -> raw_image
    raw only                             -> gen_ref:       raw -> first ref slot
    raw and some refs, a slot free       -> gen_extra_ref: raw -> first free ref slot
An input that is missing, or whose path leaves the base dir, fails the row.

An uncomputed formula in any of these cells fails the row (see `editforge.sheet.workbook`).

Each job carries an identity: a hash of the row's id (the `editforge_id` column) and what defines
the picture (mode, target, prompt, inputs as normalized paths). The seed and the journal entry hang
on it: a row whose inputs changed is a new job, never given the old result; two identical rows are two
different pictures; and a row moved by a sort or an insert is still the same job.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from editforge.errors import EditForgeError
from editforge.paths import BadPath, PathPolicy
from editforge.sheet.schema import NEED_GEN, PROMPT, RAW_IMAGE, REF_KEYS, cell_text, is_true
from editforge.sheet.workbook import Uncomputed, Workbook


@dataclass(frozen=True)
class Job:
    row: int                       # the row's number now (for messages; the identity does not use it)
    row_id: str
    mode: str                      # gen_raw | gen_ref | gen_extra_ref
    prompt: str
    inputs: tuple[Path, ...]       # absolute paths of the input images, in order
    input_keys: tuple[str, ...]    # the same as cell paths (relative to the base dir)
    target: str                    # the column key the output goes into
    identity: str

    @property
    def legacy_identity(self) -> str:
        """The identity EditForge gave this job before row ids (row number instead of row id)."""
        return _identity([self.row, self.mode, self.target, self.prompt, list(self.input_keys)])


@dataclass(frozen=True)
class RowIssue:
    row: int
    row_id: str | None
    reason: str


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)
    skipped: list[RowIssue] = field(default_factory=list)
    failed: list[RowIssue] = field(default_factory=list)
    referenced: set[str] = field(default_factory=set)  # every image path in the sheet, normalized


def _identity(definition: list) -> str:
    return hashlib.sha256(json.dumps(definition, ensure_ascii=False).encode()).hexdigest()[:32]


def plan_workbook(book: Workbook, policy: PathPolicy, *, check_files: bool = True) -> Plan:
    ref_keys = check_columns(book)
    plan = Plan()
    records = list(book.records([RAW_IMAGE, *ref_keys, PROMPT, NEED_GEN]))  # the row ids are known after a pass
    for row, values in records:
        _note_references(plan.referenced, policy, [values[k] for k in (RAW_IMAGE, *ref_keys)])
        outcome = plan_row(values, row, book.row_id(row), policy, ref_keys, check_files=check_files)
        if isinstance(outcome, Job):
            plan.jobs.append(outcome)
        elif outcome is not None:
            (plan.skipped if outcome[0] == "skipped" else plan.failed).append(RowIssue(row, book.row_id(row), outcome[1]))
    return plan


def check_columns(book: Workbook) -> list[str]:
    """The ref_image keys the sheet has; an error naming the columns synth needs and it lacks."""
    required = [k for k in (RAW_IMAGE, PROMPT, NEED_GEN) if k not in book.columns]
    ref_keys = [k for k in REF_KEYS if k in book.columns]
    if required or not ref_keys:
        missing = required or [REF_KEYS[0]]
        raise EditForgeError(
            f"the header row (row {book.header_row}) of {book.path.name} has no "
            f"{', '.join(missing)} column; rename the header or map it with "
            f"`columns` {missing[0]}=<your header>")
    return ref_keys


def job_for_row(book, row: int, policy: PathPolicy) -> Job | None:
    """The job `row` asks for as the sheet is now (inputs not checked on disk), or None."""
    ref_keys = [k for k in REF_KEYS if book.column(k) is not None]
    values = {k: book.get(row, k) for k in (RAW_IMAGE, *ref_keys, PROMPT, NEED_GEN)}
    row_id = book.row_id(row)
    outcome = plan_row(values, row, row_id, policy, ref_keys, check_files=False) if row_id else None
    return outcome if isinstance(outcome, Job) else None


def plan_row(values: Mapping[str, Any], row: int, row_id: str, policy: PathPolicy, ref_keys: list[str], *,
             check_files: bool) -> Job | tuple[str, str] | None:
    """One row: its Job, ("skipped" | "failed", reason), or None when it does not ask for a picture."""
    if isinstance(values[NEED_GEN], Uncomputed):
        return "failed", values[NEED_GEN].reason(NEED_GEN)
    if not is_true(values[NEED_GEN]):
        return None
    uncomputed = next((k for k in (RAW_IMAGE, *ref_keys, PROMPT) if isinstance(values[k], Uncomputed)), None)
    if uncomputed is not None:
        return "failed", values[uncomputed].reason(uncomputed)
    raw = cell_text(values[RAW_IMAGE])
    refs = [cell_text(values[k]) for k in ref_keys]
    prompt = cell_text(values[PROMPT])
    if not prompt:
        return "skipped", "empty prompt"
    free = [k for k, text in zip(ref_keys, refs) if not text]
    if raw and len(free) == len(ref_keys):
        mode, sources, target = "gen_ref", [RAW_IMAGE], free[0]
    elif raw and free:
        mode, sources, target = "gen_extra_ref", [RAW_IMAGE], free[0]
    elif raw:
        return "skipped", "raw_image and all ref_image slots are filled"
    elif len(free) < len(ref_keys):
        mode, target = "gen_raw", RAW_IMAGE
        sources = [k for k, text in zip(ref_keys, refs) if text]
    else:
        return "skipped", "no raw_image and no ref_image"
    try:
        inputs = [_input(policy, key, values[key], check_files) for key in sources]
    except BadPath as exc:
        return "failed", str(exc)
    keys = tuple(key for _, key in inputs)
    identity = _identity([row_id, mode, target, prompt, list(keys)])
    return Job(row, row_id, mode, prompt, tuple(p for p, _ in inputs), keys, target, identity)


def _input(policy: PathPolicy, column: str, value: Any, check_files: bool) -> tuple[Path, str]:
    try:
        path, key = policy.resolve(value.strip() if isinstance(value, str) else value)
    except BadPath as exc:
        raise BadPath(f"{column}: {exc}") from None
    if check_files and not path.is_file():
        raise BadPath(f"{column}: file not found: {cell_text(value)}")
    return path, key


def _note_references(referenced: set[str], policy: PathPolicy, values: list[Any]) -> None:
    for value in values:
        if isinstance(value, str) and value.strip():
            try:
                referenced.add(policy.key(value))
            except BadPath:
                pass  # a path outside the base dir cannot name one of our outputs
