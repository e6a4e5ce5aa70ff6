"""What the review page shows: every row of the workbook as the journal will leave it.

The workbook file lags behind the journal: `editforge synth` renders its results only every N rows,
and review verdicts wait in the journal while a synth run holds the workbook. So the view is the
file with the journal's unrendered results and queued updates laid over it in memory, by the very
`render` function synth uses; the page shows exactly what the workbook is about to become.

    view = read_view(source, journal)
    view.rows        # [RowView, ...] in sheet order, rows with nothing to look at left out
    view.row(12)     # one row, or None
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from editforge.inference.metadata import read_params
from editforge.paths import BadPath, PathPolicy
from editforge.sheet.journal import Journal, Result
from editforge.sheet.render import apply_journal
from editforge.sheet.schema import (
    ACCEPTED, GEN_SEED, GEN_STATUS, IMAGE_KEYS, INSTRUCTION_COLUMNS, JUDGE_REASON, JUDGE_SCORE, NEED_GEN, PROMPT,
    REJECTED, REVIEW, cell_text,
    is_true, normalize_header, parse_verdict,
)
from editforge.sheet.workbook import FormulaMemory, file_stamp, open_workbook

STATUSES = ("pending", ACCEPTED, REJECTED, "queued")   # queued: need_gen is set, synth has work to do
MODES = ("gen_raw", "gen_ref", "gen_extra_ref", "none")
READ = (*IMAGE_KEYS, PROMPT, NEED_GEN, GEN_SEED, GEN_STATUS, REVIEW, *INSTRUCTION_COLUMNS, JUDGE_SCORE, JUDGE_REASON)


@dataclass(frozen=True)
class RowView:
    row: int
    row_id: str                     # the row's identity (editforge_id), what changes are queued against
    images: dict[str, str]          # column key -> cell text, filled cells only, raw first
    prompt: str                     # the generation prompt (gen_edit_prompt)
    instruction: str                # the training instruction the exporter will use
    need_gen: bool
    gen_status: str
    verdict: str                    # accepted | rejected | "" (none yet)
    generated: str | None           # the column key holding the generated picture, if known
    mode: str                       # gen_raw | gen_ref | gen_extra_ref | none
    seed: int | None
    quality: dict | None
    judge_score: float | None = None  # `editforge judge`'s P(yes) for the row's pair (queued ones included)
    judge_reason: str = ""            # its short reason, or why the row could not be judged

    @property
    def status(self) -> str:
        if self.need_gen:
            return "queued"
        return self.verdict or "pending"


@dataclass
class View:
    sheet: str
    rows: list[RowView] = field(default_factory=list)

    def row(self, number: int) -> RowView | None:
        return next((r for r in self.rows if r.row == number), None)

    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for r in self.rows:
            counts[r.status] += 1
        return counts


class WorkbookSource:
    """The workbook's cells, re-read only when the file changed (big sheets take seconds to load)."""

    def __init__(self, path: Path, *, sheet: str | None, columns: Mapping[str, str] | None,
                 memory: FormulaMemory | None = None):
        self.path, self.sheet_option, self.columns, self.memory = path, sheet, columns, memory
        self._stamp: tuple[int, int, int] | None = None
        self._base: _Base | None = None

    def load(self) -> "_Base":
        stamp = file_stamp(self.path)
        if stamp != self._stamp or self._base is None:
            # read_only streams an .xlsx; the file is only ever written by render/apply_updates
            book = open_workbook(self.path, sheet=self.sheet_option, columns=self.columns, read_only=True,
                                 memory=self.memory)
            column = _column_lookup(book)
            present = [n for n in READ if column(n) is not None]
            rows = {row: {column(n): v for n, v in values.items()} for row, values in book.records(present)}
            ids = {row: book.row_id(row) for row in rows if book.row_id(row) is not None}  # known after the pass
            # no reference to `book` is kept: a read-only .xlsx holds its file open until collected
            self._base = _Base(book.sheet, column, rows, ids, {i: r for r, i in ids.items()})
            self._stamp = stamp
        return self._base


def _column_lookup(book):
    """`book.column` as a detached function: standard keys first, then header text, first one wins."""
    keys = dict(book.columns)
    by_name: dict[str, int] = {}
    for col, text in book.headers.items():
        by_name.setdefault(normalize_header(text), col)
    return lambda name: keys[name] if name in keys else by_name.get(normalize_header(name))


@dataclass
class _Base:
    sheet: str
    column: Any                               # Workbook.column: name -> 1-based column or None
    rows: dict[int, dict[int, Any]]           # row number -> {column: value} for the columns we read
    ids: dict[int, str]                       # row number -> row id
    rows_by_id: dict[str, int]

    def get(self, row: int, name: str) -> Any:
        col = self.column(name)
        return None if col is None else self.rows.get(row, {}).get(col)


class _MemoryBook:
    """Stands in for a Workbook in `apply_journal`: cells written go to memory."""

    def __init__(self, base: _Base):
        self.base = base
        self.sheet = base.sheet
        self.column = base.column
        self.row_id = base.ids.get
        self.row_of = base.rows_by_id.get
        self.cells: dict[tuple[int, Any], Any] = {}

    def _key(self, row: int, name: str) -> tuple[int, Any]:
        col = self.base.column(name)
        return row, col if col is not None else normalize_header(name)

    def get(self, row: int, name: str) -> Any:
        key = self._key(row, name)
        return self.cells[key] if key in self.cells else self.base.get(row, name)

    def set(self, row: int, name: str, value: Any) -> None:
        self.cells[self._key(row, name)] = value

    def touched_rows(self) -> set[int]:
        return {row for row, _ in self.cells}


def read_view(source: WorkbookSource, journal: Journal, policy: PathPolicy) -> View:
    base = source.load()
    book = _MemoryBook(base)
    unrendered = [r for r in journal.results(sheet=base.sheet, rendered=False) if r.status in ("done", "failed")]
    apply_journal(book, unrendered, journal.pending_changes(base.sheet), policy)
    generated = {r.output: r for r in journal.results(sheet=base.sheet, status="done")}
    view = View(base.sheet)
    instruction = next((n for n in INSTRUCTION_COLUMNS if base.column(n) is not None), PROMPT)
    for row in sorted(set(base.rows) | book.touched_rows()):
        images = {k: cell_text(book.get(row, k)) for k in IMAGE_KEYS}
        images = {k: v for k, v in images.items() if v}
        need_gen = is_true(book.get(row, NEED_GEN))
        if not (images or need_gen) or row not in base.ids:
            continue  # nothing to look at and nothing coming
        key, result, params = _generated(images, generated, policy)
        seed = book.get(row, GEN_SEED)
        view.rows.append(RowView(
            row=row, row_id=base.ids[row], images=images, prompt=cell_text(book.get(row, PROMPT)),
            instruction=cell_text(book.get(row, instruction)), need_gen=need_gen,
            gen_status=cell_text(book.get(row, GEN_STATUS)), verdict=parse_verdict(book.get(row, REVIEW)),
            generated=key,
            mode=result.mode if result else params.get("mode", "none") if params else "none",
            seed=result.seed if result else params.get("seed") if params else _int_or_none(seed),
            quality=result.quality if result else None,
            judge_score=_float_or_none(book.get(row, JUDGE_SCORE)), judge_reason=cell_text(book.get(row, JUDGE_REASON)),
        ))
    return view


def _generated(images: dict[str, str], by_output: dict[str, Result], policy: PathPolicy):
    """Which cell holds a generated picture: the journal knows; a PNG's own metadata is the fallback."""
    keys = {key: cell_key(policy, text) for key, text in images.items()}
    for key, rel in keys.items():
        if rel in by_output:
            return key, by_output[rel], None
    for key, rel in keys.items():
        if rel is not None and rel.lower().endswith(".png"):
            params = png_params(policy.base / rel)
            if "mode" in params:  # synth writes the row's mode into every picture it makes
                return key, None, params
    return None, None, None


def cell_key(policy: PathPolicy, text: str) -> str | None:
    """A cell's path as the journal names outputs (relative to the base dir), None for a URL and the like."""
    try:
        return policy.key(text)
    except BadPath:
        return None


_PARAMS_CACHE: dict[tuple[str, int], dict] = {}


def png_params(path: Path) -> dict:
    """`read_params` of a PNG, cached by modification time; {} for a missing or unreadable file."""
    try:
        stamp = (str(path), os.stat(path).st_mtime_ns)
    except OSError:
        return {}
    if stamp not in _PARAMS_CACHE:
        try:
            _PARAMS_CACHE[stamp] = read_params(path)
        except (OSError, ValueError, SyntaxError):
            _PARAMS_CACHE[stamp] = {}
    return _PARAMS_CACHE[stamp]


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
