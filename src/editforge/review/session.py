"""One review session on one workbook: what the page shows, the verdicts, and regeneration.

Every change is a queued row update in the synth journal (`Journal.record_update`), never a write
to the workbook file: a running `editforge synth` holds the workbook in memory and would overwrite
it. A background thread then writes queued updates with `apply_updates` (atomic save) soon after a
change, and again whenever it finds some waiting, e.g. once a synth run that held the workbook ends
(that run also writes them itself, at its next save).

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
from pathlib import Path
from typing import Mapping

from editforge.errors import EditForgeError
from editforge.sheet.journal import Journal
from editforge.sheet.plan import PathResolver
from editforge.sheet.render import apply_updates
from editforge.review.view import ACCEPTED, REJECTED, REVIEW, RowView, View, WorkbookSource, read_view

REJECTED_DIR = "rejected"
POLL_S = 2.0       # how often the writer looks for updates that are still waiting
DEBOUNCE_S = 0.5   # a burst of key presses becomes one workbook save
SOURCE = "review"  # the journal's `source` of our updates


class Conflict(EditForgeError):
    """The row changed (a synth run wrote a new picture) since the reviewer looked at it."""


class ReviewSession:
    def __init__(self, workbook: str | os.PathLike, *, base_dir: str | os.PathLike | None = None,
                 sheet: str | None = None, columns: Mapping[str, str] | None = None):
        self.workbook = Path(workbook)
        if not self.workbook.is_file():
            raise EditForgeError(f"workbook not found: {self.workbook}")
        self.base = Path(os.path.abspath(base_dir or self.workbook.parent))
        if not self.base.is_dir():
            raise EditForgeError(f"base dir not found: {self.base}")
        # Normalizes any cell path; confinement is checked where a file is served or moved.
        self.resolver = PathResolver(self.base, allow_outside=True)
        self.source = WorkbookSource(self.workbook, sheet=sheet, columns=columns)
        self.sheet = self.source.load().sheet
        # Pin the sheet by name: saving in Excel may change which one is active.
        self.source.sheet_option = self.sheet or None
        self.journal = Journal.for_workbook(self.workbook)
        self.last_write_error: str | None = None
        self._lock = threading.RLock()  # one sqlite connection, used from the server's threads
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None

    # -- reading -----------------------------------------------------------------------------------
    def view(self) -> View:
        with self._lock:
            return read_view(self.source, self.journal, self.resolver)

    def waiting_updates(self) -> int:
        """Updates recorded but not in the workbook file yet (a synth run holds it, or Excel does)."""
        with self._lock:
            return len(self.journal.pending_updates(self.sheet))

    def relative(self, text: str) -> str | None:
        """A cell's path relative to the base dir, or None when it points outside."""
        path, rel = self.resolver.resolve(text)
        return rel if self.base in path.parents else None

    # -- changes -----------------------------------------------------------------------------------
    def verdict(self, row: int, verdict: str, *, seen: Mapping[str, str]) -> RowView:
        """Write `accepted`, `rejected` or "" (no verdict) into the review column of `row`."""
        if verdict not in (ACCEPTED, REJECTED, ""):
            raise EditForgeError(f"unknown verdict {verdict!r}: use accepted, rejected or an empty one")
        with self._lock:
            self._current(row, seen)
            self.journal.record_update(self.sheet, row, REVIEW, verdict or None, source=SOURCE)
            self._wake.set()
            return self.view().row(row)

    def regenerate(self, row: int, *, seen: Mapping[str, str]) -> tuple[RowView | None, Path | None]:
        """Move the row's generated picture into rejected/, clear its cell, set need_gen, drop the verdict.

        The cleared cell is what makes the next `editforge synth` redo the row: with the slot empty,
        synth's row semantics plan the same job again (a new generation, so a new seed). Returns the
        row as it is now and where the old picture went (None if it was already gone).
        """
        with self._lock:
            current = self._current(row, seen)
            if current.generated is None:
                raise EditForgeError(f"row {row} has no generated picture (none in the journal or in PNG "
                                     "metadata); set need_gen yourself to have synth fill an empty slot")
            text = current.images[current.generated]
            path, rel = self.resolver.resolve(text)
            if self.base not in path.parents:
                raise EditForgeError(f"row {row}: {text} is outside the base dir {self.base}; not moving it")
            moved = _move_to_rejected(self.base, path, rel) if path.is_file() else None
            try:
                with self.journal.transaction():  # all three reach the workbook together or not at all
                    self.journal.record_update(self.sheet, row, current.generated, None, source=SOURCE)
                    self.journal.record_update(self.sheet, row, "need_gen", self._true(), source=SOURCE)
                    self.journal.record_update(self.sheet, row, REVIEW, None, source=SOURCE)
            except BaseException:
                if moved is not None:  # the row still points at the picture: put it back
                    shutil.move(moved, path)
                raise
            self._wake.set()
            return self.view().row(row), moved

    def _current(self, row: int, seen: Mapping[str, str]) -> RowView:
        if not isinstance(seen, Mapping):
            raise EditForgeError("`seen` must map column keys to the image paths shown")
        current = self.view().row(row)
        if current is None:
            raise EditForgeError(f"row {row} has no pictures to review")
        if dict(seen) != current.images:
            raise Conflict(f"row {row} changed since you looked at it (a synth run wrote it); look again")
        if current.need_gen:  # its picture is about to be replaced: a verdict would outlive it
            raise EditForgeError(f"row {row} is waiting for `editforge synth` (need_gen is set); review it after")
        return current

    def _true(self):
        # TRUE as the sheet writes it: Excel's boolean, or the text Excel writes into a CSV
        return "TRUE" if self.workbook.suffix.lower() == ".csv" else True

    # -- writing the workbook ----------------------------------------------------------------------
    def write(self) -> int | None:
        """Apply queued updates to the workbook now. None: a synth run holds it (it writes them) or
        the file is open in Excel (`last_write_error` says so); they stay queued either way."""
        # Under the lock: a view read meanwhile could see the old file but the updates as applied.
        with self._lock:
            try:
                applied = apply_updates(self.workbook, sheet=self.source.sheet_option, columns=self.source.columns)
            except EditForgeError as exc:
                self.last_write_error = str(exc)
                return None
            self.last_write_error = None
            return applied

    def start(self) -> None:
        self._writer = threading.Thread(target=self._write_loop, name="review-writer", daemon=True)
        self._writer.start()

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            if self._wake.wait(POLL_S):
                self._wake.clear()
                self._stop.wait(DEBOUNCE_S)
            if self.waiting_updates():
                self.write()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._writer is not None:
            self._writer.join()
        if self.waiting_updates():
            self.write()
        self.journal.close()


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
