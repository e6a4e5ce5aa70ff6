"""One review session on one workbook: what the page shows, the verdicts, and regeneration.

Every change is a queued change in the synth journal (`Journal.record_change`), never a write to
the workbook file: only the holder of the workbook's lock writes it (a running `editforge synth`, or
this app when none runs). A change names its row by id and carries the pictures the reviewer saw, so
it lands on that row wherever a sort or an insert moved it, and never on a row that shows something
else. A background thread writes queued changes with `apply_updates` (atomic save, into the file as
it is on disk then) soon after a change, and again whenever it finds some waiting, e.g. once a synth
run that held the workbook ends (that run also writes them itself, at its next save). Rewriting a
big workbook takes a while (about a minute for 100,000 rows), so the thread spends at most a fifth
of its time writing; the changes are safe in the journal, and shown, meanwhile.

A click costs the journal entries the last workbook read lacks, not a pass over the sheet: the view
(view.py) is rebuilt only when the journal or the file changed, and then only the rows they touch.

    session = ReviewSession("data.xlsx")
    session.start()                                  # the background writer
    row = session.view().row(12)
    session.verdict(12, "accepted", seen=row.images)  # `seen`: what the reviewer looked at
    session.regenerate(13, seen=...)                  # old picture -> rejected/, need_gen TRUE
    session.close()                                   # writes what is still queued
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Mapping

from editforge.errors import EditForgeError
from editforge.paths import BadPath, PathPolicy
from editforge.review import worker
from editforge.review.rows import RowView
from editforge.review.view import View, WorkbookSource
from editforge.sheet.journal import Journal
from editforge.sheet.render import RenderStats, apply_updates
from editforge.sheet.schema import ACCEPTED, IMAGE_KEYS, NEED_GEN, REJECTED, REVIEW
from editforge.sheet.workbook import file_stamp, workbook_file

REJECTED_DIR = "rejected"
POLL_S = 2.0       # how often the writer looks for updates that are still waiting
DEBOUNCE_S = 0.5   # a burst of key presses becomes one workbook save
WRITE_SHARE = 0.2  # the writer's pauses after a save last (1 / share - 1) times as long as the save
SOURCE = "review"  # the journal's `source` of our updates


class Conflict(EditForgeError):
    """The row changed (a synth run wrote a new picture) since the reviewer looked at it."""


class ReviewSession:
    def __init__(self, workbook: str | os.PathLike, *, base_dir: str | os.PathLike | None = None,
                 sheet: str | None = None, columns: Mapping[str, str] | None = None,
                 export_dir: str | os.PathLike | None = None):
        self.workbook = workbook_file(workbook)  # a symlink is followed: the lock and journal are the file's
        self.base = Path(os.path.abspath(base_dir or self.workbook.parent))
        if not self.base.is_dir():
            raise EditForgeError(f"base dir not found: {self.base}")
        # the only folder exports go under (the page names a folder inside it)
        self.export_dir = Path(os.path.abspath(export_dir)) if export_dir is not None else self.base
        if self.export_dir.exists() and not self.export_dir.is_dir():
            raise EditForgeError(f"export dir {self.export_dir} is a file; name a folder")
        # Normalizes any cell path; confinement is checked where a file is served or moved.
        self.policy = PathPolicy(self.base, allow_outside=True)
        self.journal = Journal.for_workbook(self.workbook)
        self.source = WorkbookSource(self.workbook, sheet=sheet, columns=columns, policy=self.policy)
        self.sheet = self.source.load().sheet
        # Pin the sheet by name: saving in Excel may change which one is active.
        self.source.sheet_option = self.sheet or None
        self.last_write_error: str | None = None
        self.last_held: str | None = None  # queued changes that wait for their row, one line
        self._lock = threading.RLock()  # one sqlite connection, used from the server's threads
        self._writing = threading.Lock()  # one workbook write at a time; views and clicks go on meanwhile
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._written: tuple | None = None  # (changes left queued, file stamp) after the last write
        self._recorded = 0   # changes this session recorded (its own commits do not move data_version)
        self._writes = 0     # writes tried: their outcome is part of the page's state
        self._view: View | None = None
        self._view_key: tuple | None = None

    # -- reading -----------------------------------------------------------------------------------
    def view(self) -> View:
        """The rows as the workbook is about to be: rebuilt only when the file or the journal changed."""
        snapshot = self.source.latest()
        with self._lock:
            key = (snapshot.serial, self.journal.data_version(), self._recorded)
            if key != self._view_key:
                same = self._view is not None and self._view.snapshot is snapshot
                previous = self._view if same else View(snapshot, self.policy)
                self._view = previous.over(self.journal.results_since(self.sheet, snapshot.marks),
                                           self.journal.changes_since(self.sheet, snapshot.marks))
                self._view_key = key
            return self._view

    def waiting_updates(self) -> int:
        """Changes recorded but not in the workbook file yet (a synth run holds it, Excel does, or
        their row is gone or changed: `last_held` says)."""
        return self.view().waiting

    def state(self) -> dict:
        """What the page's top bar shows, and `version`, which changes whenever the rows may have."""
        with self._lock:
            view = self.view()
            return {"summary": view.summary(), "waiting_updates": view.waiting, "write_error": self.last_write_error,
                    "held": self.last_held, "read_error": self.source.read_error,
                    "version": ".".join(map(str, (*self._view_key, self._writes)))}

    def relative(self, text: str) -> str | None:
        """A cell's path relative to the base dir, or None when it points outside (or is no path)."""
        try:
            path, rel = self.policy.resolve(text)
        except BadPath:
            return None
        return rel if self.base in path.parents else None

    # -- changes -----------------------------------------------------------------------------------
    def verdict(self, row: int, verdict: str, *, seen: Mapping[str, str], row_id: str | None = None) -> RowView:
        """Write `accepted`, `rejected` or "" (no verdict) into the review column of `row`.

        `seen`: the pictures the reviewer judged; `row_id` (optional) the row's id as the page knew it.
        """
        if verdict not in (ACCEPTED, REJECTED, ""):
            raise EditForgeError(f"unknown verdict {verdict!r}: use accepted, rejected or an empty one")
        with self._lock:
            current = self._current(row, seen, row_id)
            self.journal.record_change(self.sheet, current.row_id, {REVIEW: verdict or None}, row=row,
                                       expect=_shown(current), source=SOURCE)
            self._recorded += 1
            self._wake.set()
            return self.view().row(row)

    def regenerate(self, row: int, *, seen: Mapping[str, str],
                   row_id: str | None = None) -> tuple[RowView | None, Path | None]:
        """Move the row's generated picture into rejected/, clear its cell, set need_gen, drop the verdict.

        The cleared cell is what makes the next `editforge synth` redo the row: with the slot empty,
        synth's row semantics plan the same job again (a new generation, so a new seed). Returns the
        row as it is now and where the old picture went (None if it was already gone).
        """
        with self._lock:
            current = self._current(row, seen, row_id)
            if current.generated is None:
                raise EditForgeError(f"row {row} has no generated picture (none in the journal or in PNG "
                                     "metadata); set need_gen yourself to have synth fill an empty slot")
            text = current.images[current.generated]
            rel = self.relative(text)
            if rel is None:
                raise EditForgeError(f"row {row}: {text} is outside the base dir {self.base}; not moving it")
            path = self.base / rel
            moved = _move_to_rejected(self.base, path, rel) if path.is_file() else None
            try:  # one change: the three cells reach the workbook together or not at all
                self.journal.record_change(self.sheet, current.row_id,
                                           {current.generated: None, NEED_GEN: self._true(), REVIEW: None},
                                           row=row, expect=_shown(current), source=SOURCE)
            except BaseException:
                if moved is not None:  # the row still points at the picture: put it back
                    shutil.move(moved, path)
                raise
            self._recorded += 1
            self._wake.set()
            return self.view().row(row), moved

    def _current(self, row: int, seen: Mapping[str, str], row_id: str | None) -> RowView:
        if not isinstance(seen, Mapping):
            raise EditForgeError("`seen` must map column keys to the image paths shown")
        current = self.view().row(row)
        if current is None:
            raise EditForgeError(f"row {row} has no pictures to review")
        if dict(seen) != current.images or row_id not in (None, current.row_id):
            raise Conflict(f"row {row} changed since you looked at it (a synth run or an edit of the workbook); "
                           "look again")
        if current.need_gen:  # its picture is about to be replaced: a verdict would outlive it
            raise EditForgeError(f"row {row} is waiting for `editforge synth` (need_gen is set); review it after")
        return current

    def _true(self):
        # TRUE as the sheet writes it: Excel's boolean, or the text Excel writes into a CSV
        return "TRUE" if self.workbook.suffix.lower() == ".csv" else True

    # -- writing the workbook ----------------------------------------------------------------------
    def write(self) -> RenderStats | None:
        """Apply queued changes (and row ids a row lacks) to the workbook now. None: a synth run holds
        it (it writes them) or the file is open in Excel (`last_write_error` says so); they stay
        queued either way. Changes whose row is gone or changed stay queued: `last_held` says so.

        Views go on meanwhile: one read while the file is replaced still lays every change over the
        version it read (see view.py), written or not."""
        with self._writing:
            before = self._pending_ids()
            try:
                stats = worker.run(apply_updates, self.workbook, big=worker.is_big(self.workbook), detach=True,
                                   sheet=self.source.sheet_option, columns=self.source.columns, policy=self.policy)
            except EditForgeError as exc:
                with self._lock:
                    self.last_write_error = str(exc)
                    self._writes += 1
                return None
            with self._lock:
                self.last_write_error = None
                if stats is not None:
                    self.last_held = stats.held_line()
                    # the ones it left queued; a change recorded during the write is due for the next one
                    self._written = (before & self._pending_ids(), file_stamp(self.workbook))
                self._writes += 1
            return stats

    def _pending_ids(self) -> frozenset[int]:
        with self._lock:
            return frozenset(c.id for c in self.journal.pending_changes(self.sheet))

    def _write_due(self) -> bool:
        """Whether a write could do something: rows without their id in the file yet, new changes, or
        the file changed (a row a held change waits for may be back)."""
        with self._lock:
            waiting = self._pending_ids()
            if self._written is None:
                return bool(waiting) or self.source.latest().ids_missing
            return bool(waiting) and (waiting, file_stamp(self.workbook)) != self._written

    def start(self) -> None:
        """The background writer; its first write gives rows without an id theirs (in the file: changes
        name rows by id, and an id only in memory would not follow its row when a person inserts one)."""
        self._wake.set()
        self._writer = threading.Thread(target=self._write_loop, name="review-writer", daemon=True)
        self._writer.start()

    def _write_loop(self) -> None:
        quiet_until = 0.0
        while not self._stop.is_set():
            if self._wake.wait(POLL_S):
                self._wake.clear()
                self._stop.wait(DEBOUNCE_S)
            self._stop.wait(max(0.0, quiet_until - time.monotonic()))
            if not self._stop.is_set() and self._write_due():
                started = time.monotonic()
                self.write()
                took = time.monotonic() - started
                quiet_until = time.monotonic() + took * (1 / WRITE_SHARE - 1)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._writer is not None:
            self._writer.join()
        if self._write_due():
            self.write()
        self.journal.close()


def _shown(row: RowView) -> dict[str, str]:
    """What a change expects the row to still show when it is written: the pictures judged."""
    return {key: row.images.get(key, "") for key in IMAGE_KEYS}


def _move_to_rejected(base: Path, path: Path, rel: str) -> Path:
    """`base/x/y.png` -> `base/rejected/x/y.png` (`y-1.png` ... if taken). Nothing is ever deleted."""
    target = base / REJECTED_DIR / rel
    candidate, n = target, 0
    while candidate.exists():
        n += 1
        candidate = target.with_name(f"{target.stem}-{n}{target.suffix}")
    try:
        candidate.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(path, candidate)  # a rename, or copy + delete when generated/ is another mount
    except OSError as exc:
        raise EditForgeError(f"cannot move {rel} into {REJECTED_DIR}/: {exc.strerror or exc}") from None
    return candidate
