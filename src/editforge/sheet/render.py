"""Journal -> workbook: write finished results and queued row updates into the sheet, then save.

Only one process at a time writes a workbook: the one holding its `RenderLock` (an OS file lock,
released by the OS even after `kill -9`). `editforge synth` holds it for its whole run; a review app
calls `apply_updates(path)`, which renders queued updates at once when no synth run holds the lock
and otherwise leaves them to that run's next render.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from editforge.sheet.journal import Journal, journal_path
from editforge.sheet.workbook import Workbook, open_workbook

GEN_SEED = "gen_seed"
GEN_STATUS = "gen_status"


def false_like(current: Any) -> Any:
    """FALSE in the cell's own type: Excel boolean, number or text (CSV cells are always text)."""
    if isinstance(current, bool):
        return False
    if isinstance(current, (int, float)):
        return 0
    return "FALSE"


@dataclass
class RenderStats:
    results: int = 0
    updates: int = 0
    saved: bool = False


def render(book: Workbook, journal: Journal, *, results: bool = True, dirty: bool = False) -> RenderStats:
    """Apply unrendered results (if `results`) and pending updates to `book`; save if anything changed.

    Events are applied in time order, so a review verdict recorded after a result lands on top of it.
    The journal marks them rendered only after the save succeeded: a crash in between renders them
    again next time, which writes the same values.
    """
    stats = RenderStats()
    events: list[tuple[float, int, Any]] = []
    if results:
        for r in journal.results(sheet=book.sheet, rendered=False):
            if r.status in ("done", "failed"):
                events.append((r.finished or 0.0, 0, r))
    for u in journal.pending_updates(book.sheet):
        events.append((u.created, 1, u))
    events.sort(key=lambda e: (e[0], e[1]))
    for _, kind, event in events:
        if kind == 0:
            _apply_result(book, event)
        else:
            book.set(event.row, event.column, event.value)
    if events or dirty:
        book.save()
        stats.saved = True
    result_ids = [e.id for _, kind, e in events if kind == 0]
    update_ids = [e.id for _, kind, e in events if kind == 1]
    if result_ids:
        journal.mark_rendered(result_ids)
    if update_ids:
        journal.mark_applied(update_ids)
    stats.results, stats.updates = len(result_ids), len(update_ids)
    return stats


def _apply_result(book: Workbook, r) -> None:
    book.set(r.row, GEN_SEED, r.seed)
    if r.status == "done":
        book.set(r.row, r.target, r.output)
        book.set(r.row, "need_gen", false_like(book.get(r.row, "need_gen")))
        book.set(r.row, GEN_STATUS, "done")
    else:
        book.set(r.row, GEN_STATUS, f"failed: {r.error}")


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


def apply_updates(workbook: str | os.PathLike, *, sheet: str | None = None,
                  columns: Mapping[str, str] | None = None) -> int | None:
    """Write queued row updates into `workbook` now, unless a synth run holds it (then: None).

    Returns how many updates were applied. Results are never rendered here: only a synth run,
    which has just re-planned every row, knows which results still match their rows.
    """
    lock = RenderLock(workbook)
    if not lock.acquire(blocking=False):
        return None
    try:
        with Journal.for_workbook(workbook) as journal:
            book = open_workbook(workbook, sheet=sheet, columns=columns)
            return render(book, journal, results=False).updates
    finally:
        lock.release()
