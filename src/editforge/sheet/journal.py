"""The synth journal: one SQLite file beside the workbook, the source of truth for every result.

The workbook is only a view of it, rendered now and then. SQLite in WAL mode with a busy timeout lets
several processes use it at once: the synth workers of an `accelerate launch`, and a review app.

    from editforge.sheet.journal import Journal

    journal = Journal.for_workbook("data.xlsx")          # data.xlsx.journal.sqlite, created if absent
    journal.record_update("Sheet1", 12, "review", "bad")  # queue a cell write for the next render
    journal.record_update("Sheet1", 12, "need_gen", True)
    journal.close()

Row updates from other processes (`record_update`) are queued, never written to the workbook file
directly, because `editforge synth` holds the workbook in memory and would overwrite them. The synth
run applies them at its next render; when no run is going, `editforge.sheet.render.apply_updates`
applies them at once. Either way they are applied in the order they were recorded, interleaved with
generation results by time, and each exactly once.

Result lifecycle (table `results`, one row per (sheet, identity, generation)):
    running  -> the image is being made; its output name is already reserved here, so a crash leaves
                nothing the next run cannot find and delete
    done     -> the image is on disk under `output` (path relative to the base dir)
    failed   -> `error` says why; the next run tries the row again
    superseded -> a done image whose row changed before it reached the workbook; file deleted
`rendered` is set once the workbook saved with that result in it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY,
    sheet TEXT NOT NULL,
    identity TEXT NOT NULL,
    generation INTEGER NOT NULL,
    row INTEGER NOT NULL,
    mode TEXT NOT NULL,
    target TEXT NOT NULL,
    output TEXT NOT NULL,
    status TEXT NOT NULL,
    seed INTEGER,
    quality TEXT,
    error TEXT,
    run_id TEXT,
    worker INTEGER,
    started REAL,
    finished REAL,
    rendered INTEGER NOT NULL DEFAULT 0,
    UNIQUE (sheet, identity, generation)
);
CREATE INDEX IF NOT EXISTS results_pending ON results (sheet, rendered, status);
CREATE INDEX IF NOT EXISTS results_run ON results (run_id, status);
CREATE TABLE IF NOT EXISTS row_updates (
    id INTEGER PRIMARY KEY,
    sheet TEXT NOT NULL,
    row INTEGER NOT NULL,
    column TEXT NOT NULL,
    value TEXT NOT NULL,
    source TEXT,
    created REAL NOT NULL,
    applied REAL
);
CREATE INDEX IF NOT EXISTS row_updates_pending ON row_updates (sheet, applied);
"""

BUSY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Result:
    id: int
    sheet: str
    identity: str
    generation: int
    row: int
    mode: str
    target: str
    output: str
    status: str
    seed: int | None
    quality: dict | None
    error: str | None
    run_id: str | None
    finished: float | None
    rendered: bool


@dataclass(frozen=True)
class RowUpdate:
    id: int
    sheet: str
    row: int
    column: str
    value: Any
    source: str | None
    created: float


_RESULT_COLUMNS = ("id, sheet, identity, generation, row, mode, target, output, status, seed, quality, "
                   "error, run_id, finished, rendered")


def _result(r: tuple) -> Result:
    return Result(*r[:10], json.loads(r[10]) if r[10] else None, *r[11:14], bool(r[14]))


def journal_path(workbook: str | os.PathLike) -> Path:
    workbook = Path(workbook)
    return workbook.with_name(workbook.name + ".journal.sqlite")


class Journal:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        # autocommit mode; writes take `BEGIN IMMEDIATE` so two writers queue instead of deadlocking
        self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                  check_same_thread=False)
        self.db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        self.db.execute("PRAGMA journal_mode = WAL")
        # FULL: a journaled result survives power loss too, as the fsynced image it points to does
        self.db.execute("PRAGMA synchronous = FULL")
        with self.transaction():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)

    @classmethod
    def for_workbook(cls, workbook: str | os.PathLike) -> "Journal":
        return cls(journal_path(workbook))

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def transaction(self):
        return _Transaction(self.db)

    # -- meta --------------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str, *, only_if_absent: bool = False) -> str:
        """Store `value`; with `only_if_absent` keep an existing one. Returns what is stored."""
        with self.transaction():
            verb = "INSERT OR IGNORE" if only_if_absent else "INSERT OR REPLACE"
            self.db.execute(f"{verb} INTO meta (key, value) VALUES (?, ?)", (key, value))
            return self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    # -- results -----------------------------------------------------------------------------------
    def latest_by_identity(self, sheet: str) -> dict[str, Result]:
        """The newest generation of every identity in `sheet` (superseded ones included: a row changed
        back to what it was must get a generation that was never used, or the journal refuses it)."""
        rows = self.db.execute(
            f"SELECT {_RESULT_COLUMNS} FROM results WHERE sheet = ? ORDER BY identity, generation", (sheet,))
        return {r.identity: r for r in map(_result, rows)}

    def results(self, *, sheet: str | None = None, status: str | None = None, rendered: bool | None = None,
                run_id: str | None = None) -> list[Result]:
        where, args = [], []
        for column, value in (("sheet", sheet), ("status", status), ("run_id", run_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if rendered is not None:
            where.append("rendered = ?")
            args.append(int(rendered))
        sql = f"SELECT {_RESULT_COLUMNS} FROM results"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_result(r) for r in self.db.execute(sql + " ORDER BY id", args)]

    def begin(self, *, sheet: str, identity: str, generation: int, row: int, mode: str, target: str,
              output: str, seed: int, run_id: str, worker: int) -> int:
        """Reserve `output` for a row before any pixel is written; replaces an earlier failed try."""
        with self.transaction():
            self.db.execute(
                "DELETE FROM results WHERE sheet = ? AND identity = ? AND generation = ? AND status = 'failed'",
                (sheet, identity, generation))
            cur = self.db.execute(
                "INSERT INTO results (sheet, identity, generation, row, mode, target, output, status, seed,"
                " run_id, worker, started) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                (sheet, identity, generation, row, mode, target, output, seed, run_id, worker, time.time()))
            return cur.lastrowid

    def finish(self, result_id: int, *, status: str, seed: int | None = None, quality: dict | None = None,
               error: str | None = None) -> None:
        with self.transaction():
            self.db.execute(
                "UPDATE results SET status = ?, seed = COALESCE(?, seed), quality = ?, error = ?, finished = ?"
                " WHERE id = ?",
                (status, seed, json.dumps(quality) if quality is not None else None, error, time.time(),
                 result_id))

    def set_status(self, result_ids: list[int], status: str, error: str | None = None) -> None:
        with self.transaction():
            self.db.executemany("UPDATE results SET status = ?, error = ?, finished = ? WHERE id = ?",
                                [(status, error, time.time(), i) for i in result_ids])

    def mark_rendered(self, result_ids: list[int]) -> None:
        with self.transaction():
            self.db.executemany("UPDATE results SET rendered = 1 WHERE id = ?", [(i,) for i in result_ids])

    def counts(self, run_id: str) -> dict[str, int]:
        rows = self.db.execute("SELECT status, COUNT(*) FROM results WHERE run_id = ? GROUP BY status", (run_id,))
        return dict(rows.fetchall())

    # -- row updates from other processes ----------------------------------------------------------
    def record_update(self, sheet: str, row: int, column: str, value: Any, *, source: str | None = None) -> int:
        """Queue `value` (str, number, bool or None) for cell (`row`, `column`) of `sheet` ('' for CSV)."""
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO row_updates (sheet, row, column, value, source, created) VALUES (?, ?, ?, ?, ?, ?)",
                (sheet, int(row), column, json.dumps(value), source, time.time()))
            return cur.lastrowid

    def pending_updates(self, sheet: str) -> list[RowUpdate]:
        rows = self.db.execute(
            "SELECT id, sheet, row, column, value, source, created FROM row_updates"
            " WHERE sheet = ? AND applied IS NULL ORDER BY id", (sheet,))
        return [RowUpdate(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    def mark_applied(self, update_ids: list[int]) -> None:
        now = time.time()
        with self.transaction():
            self.db.executemany("UPDATE row_updates SET applied = ? WHERE id = ?", [(now, i) for i in update_ids])


class _Transaction:
    """`with journal.transaction():` — BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error; re-entrant."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.outer = False

    def __enter__(self):
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
            self.outer = True
        return self.db

    def __exit__(self, exc_type, *_):
        if self.outer:
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
