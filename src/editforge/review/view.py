"""What the review page shows: every row of the workbook as the journal will leave it, at the cost of a page.

The workbook file lags behind the journal: `editforge synth` renders its results only every N rows,
and review verdicts wait in the journal while a synth run holds the workbook. So the view is the
file with the journal's newer entries laid over it in memory, by the very `apply_journal` synth
renders with; the page shows exactly what the workbook is about to become.

Two layers, so that no request costs a pass over a big sheet:
- a `Snapshot` is one version of the file, read once: the cells the page needs, the row ids, and a
  `RowIndex` over its rows (filters, counts, sort orders). `WorkbookSource` reads the next version
  in a background thread when the file changes on disk (a synth save, the app's own write, a save in
  Excel); requests use the previous snapshot meanwhile.
- a `View` is a snapshot with every journal entry it may lack laid over it (`Journal.marks`, noted
  before the file was read). Only the rows those entries touch are rebuilt. An entry the file already
  holds changes nothing when laid over again: `apply_journal` checks each against the row as it is.

    source = WorkbookSource(path, sheet=None, columns=None, policy=policy)
    view = View(source.latest(), policy).over(results, changes)   # Journal.*_since(snapshot.marks)
    view.row(12)                    # RowView or None
    view.summary()                  # {"pending": n, "accepted": n, "rejected": n, "queued": n}
    view.page(Query({"status": "pending"}), around=12, limit=50)
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from editforge.errors import EditForgeError
from editforge.paths import PathPolicy
from editforge.review import worker
from editforge.review.index import Query, RowIndex, Selection
from editforge.review.rows import Made, RowView, row_view
from editforge.sheet.journal import Journal, Marks, Result, RowChange
from editforge.sheet.render import apply_journal
from editforge.sheet.schema import (
    GEN_SEED, GEN_STATUS, IMAGE_KEYS, INSTRUCTION_COLUMNS, JUDGE_REASON, JUDGE_SCORE, NEED_GEN, PROMPT, REVIEW,
    ROW_ID, cell_text, normalize_header,
)
from editforge.sheet.workbook import file_stamp, open_workbook

READ = (*IMAGE_KEYS, PROMPT, NEED_GEN, GEN_SEED, GEN_STATUS, REVIEW, ROW_ID, *INSTRUCTION_COLUMNS, JUDGE_SCORE,
        JUDGE_REASON)
_SERIALS = itertools.count(1)


class Snapshot:
    """One version of the workbook file, as the review page needs it; see the module docstring.

    Cells are kept by column (a list per column, one entry per row below the header): a 100,000-row
    sheet costs a list slot per cell, not a dict per row. Plain data, so a child process can build it.
    """

    serial = 0        # set by the WorkbookSource that holds it: which version this is, in this process
    read_at = 0.0     # when its reading began (time.monotonic of that process)

    def __init__(self, book, marks: Marks, made: dict[str, tuple], policy: PathPolicy):
        self.sheet, self.stamp, self.marks = book.sheet, book.stamp, marks
        self._keys = dict(book.columns)
        self._by_name: dict[str, int] = {}
        for col, text in book.headers.items():
            self._by_name.setdefault(normalize_header(text), col)
        self._columns = {name: self._find(name) for name in READ}  # looked up for every cell: no regex each time
        picks: dict[int, str] = {}
        for name in READ:
            picks.setdefault(self.column(name), name)
        picks.pop(None, None)
        self._cells: dict[int, list[Any]] = {col: [] for col in picks}
        self.first = book.header_row + 1
        self.last = book.header_row
        for number, values in book.records(list(picks.values())):
            self.last = number
            for col, name in picks.items():
                self._cells[col].append(values[name])
        # known once the pass is done; no reference to `book` is kept (a read-only .xlsx holds its file open)
        self._ids = [book.row_id(row) for row in range(self.first, self.last + 1)]
        self._rows_by_id = {row_id: row for row, row_id in enumerate(self._ids, self.first) if row_id is not None}
        # rows whose id the file does not hold yet (given in memory, as the first save will write them)
        self.ids_missing = any(row_id is not None and cell_text(self.get(row, ROW_ID)) != row_id
                               for row, row_id in enumerate(self._ids, self.first))
        self.made = made
        self.policy = policy
        self.instruction = next((n for n in INSTRUCTION_COLUMNS if self.column(n) is not None), PROMPT)
        views = (self.view(row) for row in range(self.first, self.last + 1))
        self.index = RowIndex(v for v in views if v is not None)

    def column(self, name: str) -> int | None:
        return self._columns[name] if name in self._columns else self._find(name)

    def _find(self, name: str) -> int | None:
        """As `Workbook.column`: a standard key, else a header (case/space-insensitive), first one wins."""
        return self._keys[name] if name in self._keys else self._by_name.get(normalize_header(name))

    def get(self, row: int, name: str) -> Any:
        col = self.column(name)
        if col is None or not self.first <= row <= self.last:
            return None
        return self._cells[col][row - self.first]

    def row_id(self, row: int) -> str | None:
        return self._ids[row - self.first] if self.first <= row <= self.last else None

    def row_of(self, row_id: str) -> int | None:
        return self._rows_by_id.get(row_id)

    def made_of(self, output: str) -> Made | None:
        entry = self.made.get(output)
        return Made.from_journal(entry) if entry is not None else None

    def view(self, row: int) -> RowView | None:
        return row_view(self, row, self.made_of, self.policy, self.instruction)


def read_snapshot(path: Path, sheet: str | None, columns: Mapping[str, str] | None, policy: PathPolicy) -> Snapshot:
    """Read the workbook as a Snapshot (in a child process for a big one: see worker.py)."""
    with Journal.for_workbook(path) as journal:  # its own connection: this runs in any thread or process
        marks = journal.marks()  # before the file is read: what it may lack is newer than these
        book = open_workbook(path, sheet=sheet, columns=columns, read_only=True, memory=journal)
        return Snapshot(book, marks, journal.made(book.sheet), policy)


class WorkbookSource:
    """The workbook as snapshots, read again when the file changes on disk (big sheets take seconds:
    `latest` reads in the background and answers with the previous one meanwhile)."""

    def __init__(self, path: Path, *, sheet: str | None, columns: Mapping[str, str] | None, policy: PathPolicy):
        self.path, self.sheet_option, self.columns, self.policy = path, sheet, columns, policy
        self.read_error: str | None = None  # why the newest version could not be read, if it could not
        self._snapshot: Snapshot | None = None
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._failed: tuple | None = None  # the file version that could not be read

    def load(self) -> Snapshot:
        """The file as it is now: read here and now if it changed since the last snapshot."""
        snapshot = self._snapshot
        if snapshot is None or snapshot.stamp != self._stamp():
            snapshot = self._read()
        return snapshot

    def latest(self) -> Snapshot:
        """The newest snapshot read; if the file changed since, a background thread reads it."""
        stamp = self._stamp()
        if stamp is not None and stamp != self._snapshot.stamp and stamp != self._failed:
            with self._lock:
                if self._reader is None or not self._reader.is_alive():
                    self._reader = threading.Thread(target=self._read_in_background, name="review-reader",
                                                    daemon=True)
                    self._reader.start()
        return self._snapshot

    def wait(self, timeout: float | None = None) -> None:
        """Until a background read under way has finished (for tests and shutdown)."""
        reader = self._reader
        if reader is not None:
            reader.join(timeout)

    def _stamp(self) -> tuple | None:
        try:
            return file_stamp(self.path)
        except OSError:
            return None

    def _read(self) -> Snapshot:
        read_at = time.monotonic()
        snapshot = worker.run(read_snapshot, self.path, self.sheet_option, self.columns, self.policy,
                              big=worker.is_big(self.path))
        snapshot.serial, snapshot.read_at = next(_SERIALS), read_at
        with self._lock:  # two reads may overlap (load and a background read): the later one wins
            if self._snapshot is None or self._snapshot.read_at < read_at:
                self._snapshot = snapshot
        return snapshot

    def _read_in_background(self) -> None:
        stamp = self._stamp()
        try:
            self._read()
            self.read_error = None
        except (EditForgeError, OSError) as exc:  # half-written by another program, say: keep the last one
            self._failed = stamp
            self.read_error = f"cannot read {self.path.name} again ({exc}); showing it as read before"


@dataclass(frozen=True)
class Page:
    rows: list[RowView]
    offset: int        # the first row's place among all the query selects
    total: int         # how many rows the query selects
    focus: int | None  # the row to show: the one asked for, or the nearest in the query's order


class View:
    """A snapshot with journal entries laid over it; see the module docstring.

    `over(results, changes)` gives the view with the entries the journal has now (`Journal.results_since`
    / `changes_since` the snapshot's marks): only the ones not laid over yet are applied, on a copy, when
    they all come after those (a click adds one change); otherwise all of them again, in time order.
    """

    def __init__(self, snapshot: Snapshot, policy: PathPolicy):
        self.snapshot, self.sheet, self.policy = snapshot, snapshot.sheet, policy
        self.touched: dict[int, RowView | None] = {}  # rows the entries changed: as they are now
        self.waiting = 0                              # changes not in the workbook file yet
        self._book = _MemoryBook(snapshot)
        self._fresh: dict[str, Made] = {}             # pictures made since the snapshot's marks
        self._laid: set[tuple[str, int]] = set()      # ("result" | "change", id) of the entries laid over
        self._last = -math.inf                        # the time of the newest of them
        self._selections: dict[tuple, Selection] = {}

    def over(self, results: list[Result], changes: list[RowChange]) -> "View":
        entries = {("result", r.id) for r in results} | {("change", c.id) for c in changes}
        new_results = [r for r in results if ("result", r.id) not in self._laid]
        new_changes = [c for c in changes if ("change", c.id) not in self._laid]
        times = [r.finished or 0.0 for r in new_results] + [c.created for c in new_changes]
        view = self._copy()
        if not self._laid <= entries or (times and min(times) <= self._last):
            view = View(self.snapshot, self.policy)  # one went away (superseded) or came in between
            new_results, new_changes = results, changes
        view._lay(new_results, new_changes)
        view.waiting = sum(c.applied is None for c in changes)
        return view

    def _copy(self) -> "View":
        view = View(self.snapshot, self.policy)
        view.touched, view._fresh, view._laid, view._last = (dict(self.touched), dict(self._fresh), set(self._laid),
                                                             self._last)
        view._book.cells = dict(self._book.cells)
        return view

    def _lay(self, results: list[Result], changes: list[RowChange]) -> None:
        self._book.written = set()
        apply_journal(self._book, results, changes, self.policy)
        self._fresh.update((r.output, Made(r.mode, r.seed, r.quality)) for r in results if r.status == "done")
        for number in self._book.written:
            self.touched[number] = row_view(self._book, number, self._made, self.policy, self.snapshot.instruction)
        self._laid |= {("result", r.id) for r in results} | {("change", c.id) for c in changes}
        self._last = max([self._last, *(r.finished or 0.0 for r in results), *(c.created for c in changes)])

    def _made(self, output: str) -> Made | None:
        return self._fresh.get(output) or self.snapshot.made_of(output)

    def row(self, number: int) -> RowView | None:
        if number in self.touched:
            return self.touched[number]
        return self.snapshot.view(number)

    def summary(self) -> dict[str, int]:
        index = self.snapshot.index
        counts = dict(index.counts)
        for number, row in self.touched.items():
            at = index.position(number)
            if at is not None:
                counts[index.status(at)] -= 1
            if row is not None:
                counts[row.status] += 1
        return counts

    def select(self, query: Query) -> Selection:
        key = query.key()
        if key not in self._selections:
            self._selections[key] = self.snapshot.index.select(query, self.touched)
        return self._selections[key]

    def page(self, query: Query = Query(), *, limit: int, offset: int = 0, around: int | None = None,
             after: int | None = None, before: int | None = None) -> Page:
        """`limit` rows of what `query` selects: from `offset`, or the page holding `around` (or the
        first row after it in the query's order), the first row `after` one, or the last `before` one."""
        selection = self.select(query)
        anchor = next(((row, how) for row, how in ((around, "around"), (after, "after"), (before, "before"))
                       if row is not None), None)
        at = offset
        if anchor is not None:
            at = self._place(selection, query, *anchor)
        at = min(max(at, 0), max(selection.total - 1, 0))
        start = at - at % limit if anchor is not None else at
        rows = [self.row(number) for number in selection.rows(start, start + limit)]
        focus = selection.rows(at, at + 1)
        return Page(rows=rows, offset=start, total=selection.total, focus=focus[0] if focus else None)

    def _place(self, selection: Selection, query: Query, number: int, how: str) -> int:
        """Where row `number` is (or would be) among the selected rows."""
        row = self.row(number)
        if row is not None:
            key = query.sort_key(row)
        elif query.sort == "row":
            key = (float(number), number)  # a row with nothing to review: its place in sheet order
        else:
            return 0
        if how == "around":
            return selection.rank(key)
        if how == "after":
            return selection.rank(key, right=True)
        return selection.rank(key) - 1


class _MemoryBook:
    """Stands in for a Workbook in `apply_journal`: cells written go to memory, over a snapshot."""

    def __init__(self, snapshot: Snapshot):
        self.snapshot = snapshot
        self.sheet = snapshot.sheet
        self.column = snapshot.column
        self.row_id = snapshot.row_id
        self.row_of = snapshot.row_of
        self.cells: dict[tuple[int, Any], Any] = {}
        self.written: set[int] = set()  # rows set since the caller last emptied it

    def _key(self, row: int, name: str) -> tuple[int, Any]:
        col = self.snapshot.column(name)
        return row, col if col is not None else normalize_header(name)

    def get(self, row: int, name: str) -> Any:
        key = self._key(row, name)
        return self.cells[key] if key in self.cells else self.snapshot.get(row, name)

    def set(self, row: int, name: str, value: Any) -> None:
        self.cells[self._key(row, name)] = value
        self.written.add(row)
