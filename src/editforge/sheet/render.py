"""Journal -> workbook: write finished results and queued changes into the sheet by row id, then save.

Only one process at a time writes a workbook: the one holding its `RenderLock` (an OS file lock,
released by the OS even after `kill -9`). `editforge synth` holds it for its whole run; a review app
calls `apply_updates(path)`, which renders queued changes at once when no synth run holds the lock
and otherwise leaves them to that run's next render.

The workbook is also a person's document, edited while EditForge runs, so a `SheetWriter` never
saves over a file it has not read: before every save it compares the file on disk with the one it
read (mtime, size, inode), and if someone saved meanwhile it reads their version and writes
EditForge's cells into it, by row id. A person's cells always win:
- a result is written only while its row still asks for exactly that job (same row id, prompt,
  inputs, free slot, need_gen); a row the person changed meanwhile is left as they made it, and
  planned again by the next run;
- a queued change is written only to the row holding its row id, and only while that row still
  shows what the change expects (the pictures a reviewer judged); otherwise it stays queued and is
  reported in one line;
- a result this writer already saved, which the person's version lacks although the row still asks
  for that very job (their program had the file open from before that save), is written again.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

from editforge.errors import EditForgeError
from editforge.paths import PathPolicy
from editforge.sheet.journal import Journal, Result, RowChange, journal_path
from editforge.sheet.plan import job_for_row
from editforge.sheet.schema import GEN_SEED, GEN_STATUS, NEED_GEN, PROMPT, cell_text, false_like
from editforge.sheet.workbook import Workbook, WorkbookChanged, ensure_not_locked, open_workbook, workbook_file

SAVE_ATTEMPTS = 5  # someone saving again and again while we write: give up after this many re-reads


@dataclass
class Applied:
    """What `apply_journal` wrote into a book, and what it kept back."""

    results: list[Result] = field(default_factory=list)
    changes: list[int] = field(default_factory=list)
    stale: list[Result] = field(default_factory=list)      # results whose row changed: not written
    held: list[tuple[RowChange, str]] = field(default_factory=list)  # changes kept queued, and why


@dataclass
class RenderStats:
    results: int = 0
    updates: int = 0
    saved: bool = False
    stale: int = 0
    held: list[str] = field(default_factory=list)  # why queued changes wait, one line each

    def held_line(self) -> str | None:
        if not self.held:
            return None
        more = f" (and {len(self.held) - 1} more)" if len(self.held) > 1 else ""
        return f"{len(self.held)} queued change(s) kept in the journal: {self.held[0]}{more}"


def apply_journal(book, results: list[Result], changes: list[RowChange], policy: PathPolicy) -> Applied:
    """Write `results` and `changes` into `book` in time order, each onto the row holding its row id.

    `book` is a `Workbook` or anything with its get/set/row_of/row_id/column (the review app's view).
    """
    applied = Applied()
    events = sorted([(r.finished or 0.0, 0, r) for r in results] + [(c.created, 1, c) for c in changes],
                    key=lambda e: (e[0], e[1]))
    for _, kind, event in events:
        if kind == 0:
            _result(book, event, policy, applied)
        else:
            _change(book, event, applied)
    return applied


def _result(book, r: Result, policy: PathPolicy, applied: Applied) -> None:
    row = book.row_of(r.row_id) if r.row_id else None
    if row is not None and r.rendered and book.get(row, GEN_SEED) == r.seed:
        return  # saved earlier and still there
    job = job_for_row(book, row, policy) if row is not None else None
    if job is None or job.identity != r.identity:
        if not r.rendered:
            applied.stale.append(r)  # the person changed or deleted the row since it was planned
        return
    book.set(row, GEN_SEED, r.seed)
    if r.status == "done":
        book.set(row, r.target, r.output)
        book.set(row, NEED_GEN, false_like(book.get(row, NEED_GEN)))
        book.set(row, GEN_STATUS, "done")
    else:
        book.set(row, GEN_STATUS, f"failed: {r.error}")
    applied.results.append(r)


def _change(book, c: RowChange, applied: Applied) -> None:
    row = book.row_of(c.row_id) if c.row_id else c.row  # no id: queued before row ids existed
    if row is None:
        applied.held.append((c, f"row {c.row} (id {c.row_id}) is no longer in the sheet"))
        return
    differs = [k for k, v in (c.expect or {}).items() if cell_text(book.get(row, k)) != v]
    if differs:
        where = f"row {row}" + (f" (row {c.row} when queued)" if row != c.row else "")
        applied.held.append((c, f"{where} changed since the change was queued ({', '.join(differs)})"))
        return
    for column, value in c.cells.items():
        book.set(row, column, value)
    applied.changes.append(c.id)


class SheetWriter:
    """The workbook as the one process writing it holds it; see the module docstring.

    `statuses(book) -> bool` (optional, called at every render) writes the caller's own cells
    (synth's skip/fail reasons) into a book that lacks them and says whether it changed anything.
    """

    def __init__(self, path: str | os.PathLike, journal: Journal, policy: PathPolicy, *, sheet: str | None = None,
                 columns: Mapping[str, str] | None = None, statuses: Callable[[Workbook], bool] | None = None):
        self.journal, self.policy, self.statuses = journal, policy, statuses
        self._path = path  # as given: Excel's lock file of a symlink's name counts too
        self._open_args = dict(sheet=sheet, columns=columns, memory=journal)
        self.book = open_workbook(path, **self._open_args)
        self._open_args["sheet"] = self.book.sheet or None  # pin it: a save in Excel may change the active one
        # Changes queued before row ids name a row number of the file as it is now: give them that row's
        # id, and its prompt as what it must still show, before anyone's later save can move the row.
        journal.adopt_legacy_changes(self.book.sheet, self.book.row_id,
                                     lambda row: {PROMPT: cell_text(self.book.get(row, PROMPT))})
        self._dirty = False                    # the caller's own cells are in self.book, not on disk yet
        self._unsaved = False                  # a save failed after writing into self.book
        self._written: dict[int, Result] = {}  # results this writer saved (re-written after a stale save)

    def render(self, *, results: bool = True, changes: bool = True) -> RenderStats:
        """Apply unrendered results and queued changes (as asked); save if anything changed.

        The journal marks them rendered only after the save succeeded: a crash in between renders
        them again next time, which writes the same values.
        """
        for attempt in range(SAVE_ATTEMPTS):
            reread = self._reread_if_changed()
            ensure_not_locked(self.book.path, *self.book.aliases)  # before writing anything into the book
            pending = self.journal.results(sheet=self.book.sheet, rendered=False) if results else []
            pending = [r for r in pending if r.status in ("done", "failed")]
            if reread:
                pending += list(self._written.values())
            if self.statuses is not None and self.statuses(self.book):  # first: its columns come first
                self._dirty = True
            queued = self.journal.pending_changes(self.book.sheet) if changes else []
            applied = apply_journal(self.book, pending, queued, self.policy)
            if self.book.fill_row_ids():
                self._dirty = True
            stats = RenderStats(results=len(applied.results), updates=len(applied.changes), stale=len(applied.stale),
                                held=[why for _, why in applied.held])
            if not (applied.results or applied.changes or self._dirty):
                return stats
            try:
                self.book.save()
            except WorkbookChanged:
                continue
            except BaseException:
                self._unsaved = True  # the book holds writes the journal does not count as done: re-read it
                raise
            self._dirty = False
            self.journal.mark_rendered([r.id for r in applied.results if not r.rendered])
            self.journal.mark_applied(applied.changes)
            self._written.update((r.id, _as_rendered(r)) for r in applied.results)
            stats.saved = True
            return stats
        raise EditForgeError(f"{self.book.path.name} kept changing on disk while EditForge tried to save it "
                             f"({SAVE_ATTEMPTS} times); everything is safe in the journal, try again")

    def _reread_if_changed(self) -> bool:
        if not (self._unsaved or self.book.changed_on_disk()):
            return False
        for wait in (0.0, 0.2, 0.5, 1.0):  # a program still writing the file in place: give it a moment
            time.sleep(wait)
            try:
                self.book = open_workbook(self._path, **self._open_args)
                break
            except EditForgeError:
                if wait == 1.0:
                    raise
        self._unsaved = False
        self._dirty = False  # what was not saved is written into the new version by this render
        return True


def _as_rendered(r: Result) -> Result:
    return replace(r, rendered=True)


class RenderLock:
    """An exclusive, non-inheritable OS lock on `<workbook>.journal.sqlite.lock`."""

    def __init__(self, workbook: str | os.PathLike):
        self.path = Path(str(journal_path(workbook)) + ".lock")
        self._fh = None

    def acquire(self, *, blocking: bool = True) -> bool:
        self._fh = open(self.path, "a+b")
        try:
            if os.name == "nt":  # pragma: no cover - exercised on Windows only
                import msvcrt
                msvcrt.locking(self._fh.fileno(), msvcrt.LK_LOCK if blocking else msvcrt.LK_NBLCK, 1)
            else:
                import fcntl
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError:
            self._fh.close()
            self._fh = None
            return False
        return True

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the descriptor drops the lock
            self._fh = None

    def __enter__(self) -> "RenderLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def apply_updates(workbook: str | os.PathLike, *, sheet: str | None = None, columns: Mapping[str, str] | None = None,
                  policy: PathPolicy | None = None) -> RenderStats | None:
    """Write queued changes (and row ids a row lacks) into `workbook` now, unless a synth run holds it
    (then: None, and that run writes them).

    Results are never rendered here: only a synth run, which has just re-planned every row, knows
    which results still match their rows.
    """
    path = workbook_file(workbook)
    lock = RenderLock(path)
    if not lock.acquire(blocking=False):
        return None
    try:
        ensure_not_locked(workbook, path)  # before reading a big workbook only to find Excel has it
        with Journal.for_workbook(path) as journal:
            writer = SheetWriter(workbook, journal, policy or PathPolicy(path.parent, allow_outside=True),
                                 sheet=sheet, columns=columns)
            return writer.render(results=False)
    finally:
        lock.release()
