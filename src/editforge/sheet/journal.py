"""The synth journal: one SQLite file beside the workbook, the source of truth for every result.

The workbook is only a view of it, rendered now and then. SQLite in WAL mode with a busy timeout lets
several processes use it at once: the synth workers of an `accelerate launch`, and a review app.

    from editforge.sheet.journal import Journal

    journal = Journal.for_workbook("data.xlsx")          # data.xlsx.journal.sqlite, created if absent
    journal.record_change("Sheet1", "ef3a9c01d2b7", {"review": "rejected", "need_gen": True},
                          expect={"raw_image": "generated/raw/x.png"}, row=12)
    journal.close()

Changes from other processes (`record_change`) are queued, never written to the workbook file
directly: whoever holds the workbook's `RenderLock` (a synth run, or `apply_updates` when no run
holds it) writes them at its next render, in the order they were recorded, interleaved with
generation results by time, each exactly once. A change names its row by the row's id (the
`editforge_id` column), not by its number, so rows inserted or sorted meanwhile do not misplace it,
and `expect` holds cells the row must still show (the pictures a reviewer judged): a change whose row
is gone or shows something else stays queued and is reported, never applied to the wrong row.

Result lifecycle (table `results`, one row per (sheet, identity, generation)):
    running  -> the image is being made; its output name is already reserved here, so a crash leaves
                nothing the next run cannot find and delete
    done     -> the image is on disk under `output` (path relative to the base dir)
    failed   -> `error` says why, `failure` what kind: `input` (the row's own input failed a check),
                `quality` (the gate), `error` (a crash, out of memory) or `interrupted` (a killed run)
    superseded -> a done image whose row changed before it reached the workbook; file deleted
`rendered` is set once the workbook saved with that result in it.

Judgements (table `judgements`, `editforge judge` and `synth --judge`): one row per judged pair, `pair`
fingerprinting what was judged (judge, instruction, the files), so a row is judged again only when its
pair changed. Its cells reach the workbook as a queued change recorded in the same transaction. `input_stamp` fingerprints the
input files (size, mtime), so a failed row is tried again when its inputs change.

Schema versions: 1 (EditForge before row ids: results and updates by row number) is migrated in
place when opened: new columns, pending updates copied into `row_changes` (with their row number;
`adopt_legacy` gives them row ids), results flagged for `rekey_legacy_results`.
"""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
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
    row_id TEXT,
    input_stamp TEXT,
    failure TEXT,
    UNIQUE (sheet, identity, generation)
);
CREATE INDEX IF NOT EXISTS results_pending ON results (sheet, rendered, status);
CREATE INDEX IF NOT EXISTS results_run ON results (run_id, status);
CREATE TABLE IF NOT EXISTS row_changes (
    id INTEGER PRIMARY KEY,
    sheet TEXT NOT NULL,
    row_id TEXT,
    row INTEGER NOT NULL,
    cells TEXT NOT NULL,
    expect TEXT,
    source TEXT,
    created REAL NOT NULL,
    applied REAL
);
CREATE INDEX IF NOT EXISTS row_changes_pending ON row_changes (sheet, applied);
CREATE TABLE IF NOT EXISTS formula_values (
    sheet TEXT NOT NULL,
    row_id TEXT NOT NULL,
    column TEXT NOT NULL,
    formula TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (sheet, row_id, column)
);
CREATE TABLE IF NOT EXISTS judgements (
    id INTEGER PRIMARY KEY,
    sheet TEXT NOT NULL,
    row_id TEXT NOT NULL,
    pair TEXT NOT NULL,
    score REAL,
    reason TEXT,
    draft TEXT,
    error TEXT,
    run_id TEXT,
    finished REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS judgements_row ON judgements (sheet, row_id, id);
"""
# Version 1 journals: the columns and the queue it did not have.
_V1_RESULT_COLUMNS = ("row_id TEXT", "input_stamp TEXT", "failure TEXT")

BUSY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Result:
    id: int
    sheet: str
    identity: str
    generation: int
    row: int                        # the row's number when it was planned (for messages)
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
    row_id: str | None = None       # None: journaled by EditForge before row ids
    input_stamp: str | None = None
    failure: str | None = None      # input | quality | error | interrupted (status failed)


@dataclass(frozen=True)
class Judgement:
    id: int
    row_id: str
    pair: str                       # fingerprint of what was judged
    score: float | None             # None: failed (`error` says why)
    reason: str | None
    draft: str | None               # an instruction drafted for the row
    error: str | None
    run_id: str | None


@dataclass(frozen=True)
class RowChange:
    id: int
    sheet: str
    row_id: str | None              # None: queued by EditForge before row ids (by `row` alone)
    row: int                        # the row's number when the change was queued
    cells: dict[str, Any]           # column -> value to write
    expect: dict[str, str] | None   # column -> text the row must still show, else the change waits
    source: str | None
    created: float
    applied: float | None = None    # when it reached the workbook file; None while it waits


@dataclass(frozen=True)
class Marks:
    """Where the journal stood when a reader began to read the workbook file: what that file may lack.

    Taken before the file is read. Every result or change it may lack is newer than `last_result` /
    `last_change`, or is listed here as not yet in the file (whatever happened to it since).
    """

    last_result: int
    unrendered: frozenset[int]
    last_change: int
    pending: frozenset[int]


_RESULT_COLUMNS = ("id, sheet, identity, generation, row, mode, target, output, status, seed, quality, "
                   "error, run_id, finished, rendered, row_id, input_stamp, failure")


def _result(r: tuple) -> Result:
    return Result(*r[:10], json.loads(r[10]) if r[10] else None, *r[11:14], bool(r[14]), *r[15:])


_CHANGE_COLUMNS = "id, sheet, row_id, row, cells, expect, source, created, applied"


def _change(r: tuple) -> RowChange:
    return RowChange(r[0], r[1], r[2], r[3], json.loads(r[4]), json.loads(r[5]) if r[5] else None, *r[6:])


def _since(table: str, columns: str, where: str) -> str:
    """Entries newer than a mark or listed in it (a JSON list), by primary key: two lookups, never a scan
    (`+sheet` keeps SQLite from preferring the sheet index, which would visit every entry of the sheet).
    Parameters: mark, sheet, listed ids, mark, sheet."""
    return (f"SELECT {columns} FROM {table} WHERE id > ? AND {where} UNION ALL"
            f" SELECT {columns} FROM {table} WHERE id IN (SELECT value FROM json_each(?)) AND id <= ? AND {where}"
            " ORDER BY id")


def journal_path(workbook: str | os.PathLike) -> Path:
    workbook = Path(workbook)
    return workbook.with_name(workbook.name + ".journal.sqlite")


class Journal:
    def __init__(self, path: str | os.PathLike, *, read_only: bool = False):
        """Open (and create, or migrate) the journal; `read_only` only reads an existing one as it is."""
        self.path = Path(path)
        uri = f"{self.path.resolve().as_uri()}?mode=ro" if read_only else str(self.path)
        # autocommit mode; writes take `BEGIN IMMEDIATE` so two writers queue instead of deadlocking
        self.db = sqlite3.connect(uri, uri=read_only, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                  check_same_thread=False)
        self.db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if read_only:
            return
        self.db.execute("PRAGMA journal_mode = WAL")
        # FULL: a journaled result survives power loss too, as the fsynced image it points to does
        self.db.execute("PRAGMA synchronous = FULL")
        with self.transaction():
            existing = self._table_exists("results")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self.db.execute(statement)
            version = int(self.meta("schema_version") or (1 if existing else SCHEMA_VERSION))
            if version < SCHEMA_VERSION:
                self._migrate_from_v1()
            self.set_meta("schema_version", str(SCHEMA_VERSION))

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

    def _table_exists(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None

    def _migrate_from_v1(self) -> None:
        present = {r[1] for r in self.db.execute("PRAGMA table_info(results)")}
        for column in _V1_RESULT_COLUMNS:
            if column.split()[0] not in present:
                self.db.execute(f"ALTER TABLE results ADD COLUMN {column}")
        if self._table_exists("row_updates"):
            waiting = self.db.execute("SELECT id, sheet, row, column, value, source, created FROM row_updates"
                                      " WHERE applied IS NULL ORDER BY id").fetchall()
            self.db.executemany(
                "INSERT INTO row_changes (sheet, row_id, row, cells, expect, source, created)"
                " VALUES (?, NULL, ?, ?, NULL, ?, ?)",
                [(sheet, row, json.dumps({column: json.loads(value)}), source, created)
                 for _, sheet, row, column, value, source, created in waiting])
            self.db.executemany("UPDATE row_updates SET applied = ? WHERE id = ?",
                                [(time.time(), r[0]) for r in waiting])
        if self.db.execute("SELECT 1 FROM results WHERE row_id IS NULL LIMIT 1").fetchone():
            self.set_meta("legacy_results", "1")

    # -- meta --------------------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        if not self._table_exists("meta"):
            return None
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

    def marks(self) -> Marks:
        """The journal now, for a reader about to read the workbook (see `Marks`)."""
        # the newest ids first: an entry made between these queries is newer than them, so it is covered
        last_result = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM results").fetchone()[0]
        last_change = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM row_changes").fetchone()[0]
        unrendered = frozenset(r[0] for r in self.db.execute(
            "SELECT id FROM results WHERE rendered = 0 AND id <= ?", (last_result,)))
        pending = frozenset(r[0] for r in self.db.execute(
            "SELECT id FROM row_changes WHERE applied IS NULL AND id <= ?", (last_change,)))
        return Marks(last_result, unrendered, last_change, pending)

    def results_since(self, sheet: str, marks: Marks) -> list[Result]:
        """Done and failed results of `sheet` that a workbook read at `marks` may lack."""
        where = "+sheet = ? AND status IN ('done', 'failed')"
        rows = self.db.execute(_since("results", _RESULT_COLUMNS, where),
                               (marks.last_result, sheet, json.dumps(sorted(marks.unrendered)), marks.last_result, sheet))
        return [_result(r) for r in rows]

    def changes_since(self, sheet: str, marks: Marks) -> list[RowChange]:
        """Changes to `sheet` that a workbook read at `marks` may lack, written to the file since or not."""
        rows = self.db.execute(_since("row_changes", _CHANGE_COLUMNS, "+sheet = ?"),
                               (marks.last_change, sheet, json.dumps(sorted(marks.pending)), marks.last_change, sheet))
        return [_change(r) for r in rows]

    def made(self, sheet: str) -> dict[str, tuple[int, str, int | None, str | None]]:
        """Every picture made for `sheet` (done results) by output path: (result id, mode, seed,
        quality as JSON text); light enough to hold for a 100,000-row sheet."""
        rows = self.db.execute("SELECT output, id, mode, seed, quality FROM results WHERE sheet = ? AND status = 'done'"
                               " ORDER BY id", (sheet,))
        return {r[0]: r[1:] for r in rows}

    def data_version(self) -> int:
        """Changes when another connection (process) commits; this connection's own commits do not count."""
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    def begin(self, *, sheet: str, identity: str, generation: int, row: int, row_id: str, mode: str, target: str,
              output: str, seed: int, run_id: str, worker: int, input_stamp: str | None = None) -> int:
        """Reserve `output` for a row before any pixel is written; replaces an earlier failed try."""
        with self.transaction():
            self.db.execute(
                "DELETE FROM results WHERE sheet = ? AND identity = ? AND generation = ? AND status = 'failed'",
                (sheet, identity, generation))
            cur = self.db.execute(
                "INSERT INTO results (sheet, identity, generation, row, row_id, mode, target, output, status,"
                " seed, run_id, worker, started, input_stamp)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?)",
                (sheet, identity, generation, row, row_id, mode, target, output, seed, run_id, worker, time.time(),
                 input_stamp))
            return cur.lastrowid

    def finish(self, result_id: int, *, status: str, seed: int | None = None, quality: dict | None = None,
               error: str | None = None, failure: str | None = None) -> None:
        with self.transaction():
            self.db.execute(
                "UPDATE results SET status = ?, seed = COALESCE(?, seed), quality = ?, error = ?, failure = ?,"
                " finished = ? WHERE id = ?",
                (status, seed, json.dumps(quality) if quality is not None else None, error, failure, time.time(),
                 result_id))

    def set_status(self, result_ids: list[int], status: str, error: str | None = None,
                   failure: str | None = None) -> None:
        with self.transaction():
            self.db.executemany("UPDATE results SET status = ?, error = ?, failure = ?, finished = ? WHERE id = ?",
                                [(status, error, failure, time.time(), i) for i in result_ids])

    def mark_rendered(self, result_ids: list[int]) -> None:
        with self.transaction():
            self.db.executemany("UPDATE results SET rendered = 1 WHERE id = ?", [(i,) for i in result_ids])

    def counts(self, run_id: str) -> dict[str, int]:
        rows = self.db.execute("SELECT status, COUNT(*) FROM results WHERE run_id = ? GROUP BY status", (run_id,))
        return dict(rows.fetchall())

    def rekey_legacy_results(self, sheet: str, identities: dict[str, tuple[str, str]]) -> int:
        """Results journaled before row ids, {old identity: (new identity, row id)}: moved onto the
        new identities once (the first run after the upgrade), so they are found like new ones."""
        if not self.meta("legacy_results"):
            return 0
        with self.transaction():
            moved = 0
            for old, (new, row_id) in identities.items():
                moved += self.db.execute(
                    "UPDATE results SET identity = ?, row_id = ? WHERE sheet = ? AND identity = ? AND row_id IS NULL",
                    (new, row_id, sheet, old)).rowcount
            self.db.execute("DELETE FROM meta WHERE key = 'legacy_results'")
            return moved

    # -- queued changes from other processes -------------------------------------------------------
    def record_change(self, sheet: str, row_id: str, cells: dict[str, Any], *, row: int,
                      expect: dict[str, str] | None = None, source: str | None = None) -> int:
        """Queue `cells` ({column: str, number, bool or None}) for the row `row_id` of `sheet` ('' for a
        CSV). `row` is its number now (for messages); `expect`: cells it must still show when applied."""
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO row_changes (sheet, row_id, row, cells, expect, source, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (sheet, row_id, int(row), json.dumps(cells), json.dumps(expect) if expect is not None else None,
                 source, time.time()))
            return cur.lastrowid

    def pending_changes(self, sheet: str) -> list[RowChange]:
        rows = self.db.execute(f"SELECT {_CHANGE_COLUMNS} FROM row_changes WHERE sheet = ? AND applied IS NULL"
                               " ORDER BY id", (sheet,))
        return [_change(r) for r in rows]

    def mark_applied(self, change_ids: list[int]) -> None:
        now = time.time()
        with self.transaction():
            self.db.executemany("UPDATE row_changes SET applied = ? WHERE id = ?", [(now, i) for i in change_ids])

    def adopt_legacy_changes(self, sheet: str, row_id_of, expect_of) -> None:
        """Changes queued before row ids name only a row number: give them, once, that row's id and
        `expect_of(row)` (cells it must still show) by the workbook as it is now, the one the old
        version queued them against; a later move of the row is followed, a mismatch holds them."""
        with self.transaction():
            legacy = self.db.execute("SELECT id, row FROM row_changes WHERE sheet = ? AND row_id IS NULL"
                                     " AND applied IS NULL", (sheet,)).fetchall()
            self.db.executemany("UPDATE row_changes SET row_id = ?, expect = ? WHERE id = ?",
                                [(row_id_of(row), json.dumps(expect_of(row)), change) for change, row in legacy
                                 if row_id_of(row)])

    # -- judgements ---------------------------------------------------------------------------------
    def record_judgement(self, sheet: str, row_id: str, pair: str, *, row: int, cells: dict[str, Any],
                         expect: dict[str, str], score: float | None = None, reason: str | None = None,
                         draft: str | None = None, error: str | None = None, run_id: str | None = None) -> int:
        """Journal a judgement and queue its `cells` for the row (written while it still shows `expect`)."""
        with self.transaction():
            cur = self.db.execute(
                "INSERT INTO judgements (sheet, row_id, pair, score, reason, draft, error, run_id, finished)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (sheet, row_id, pair, score, reason, draft, error, run_id, time.time()))
            self.record_change(sheet, row_id, cells, row=row, expect=expect, source="judge")
            return cur.lastrowid

    def latest_judgements(self, sheet: str) -> dict[str, Judgement]:
        """The newest judgement of every row id of `sheet`."""
        rows = self.db.execute("SELECT id, row_id, pair, score, reason, draft, error, run_id FROM judgements"
                               " WHERE sheet = ? ORDER BY id", (sheet,))
        return {r[1]: Judgement(*r) for r in rows}

    # -- values of formula cells (openpyxl drops them when it saves) -------------------------------
    def formula_values(self, sheet: str) -> dict[tuple[str, str], tuple[str, Any]]:
        """{(row id, column): (formula, value)} as remembered for `sheet`."""
        if not self._table_exists("formula_values"):
            return {}
        rows = self.db.execute("SELECT row_id, column, formula, value FROM formula_values WHERE sheet = ?", (sheet,))
        return {(r[0], r[1]): (r[2], _load_value(r[3])) for r in rows}

    def remember_formulas(self, sheet: str, entries: list[tuple[str, str, str, Any]]) -> None:
        """Keep (row id, column, formula, value) until the formula text changes."""
        with self.transaction():
            self.db.executemany(
                "INSERT OR REPLACE INTO formula_values (sheet, row_id, column, formula, value) VALUES (?, ?, ?, ?, ?)",
                [(sheet, row_id, column, formula, _dump_value(value)) for row_id, column, formula, value in entries])


class RecalledFormulas:
    """The formula values a workbook's existing journal remembers, for readers that write nothing
    (a dry run, the dataset tools): it recalls and learns nothing, and creates no journal.

        with RecalledFormulas("data.xlsx") as memory:
            book = open_workbook("data.xlsx", read_only=True, memory=memory)
    """

    def __init__(self, workbook: str | os.PathLike):
        self.journal = None
        path = journal_path(workbook)
        if path.is_file():
            try:
                self.journal = Journal(path, read_only=True)
                self.journal.meta("schema_version")
            except sqlite3.Error:  # not readable without writing (say, a WAL file owned by someone else)
                self.close()

    def formula_values(self, sheet: str) -> dict[tuple[str, str], tuple[str, Any]]:
        return self.journal.formula_values(sheet) if self.journal is not None else {}

    def remember_formulas(self, sheet: str, entries) -> None:
        pass

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    def __enter__(self) -> "RecalledFormulas":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _dump_value(value: Any) -> str:
    """Cell values as JSON; dates (a formula may compute one) as tagged ISO text."""
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return json.dumps({"$" + type(value).__name__: value.isoformat()})
    return json.dumps(value)


def _load_value(text: str) -> Any:
    value = json.loads(text)
    if isinstance(value, dict) and len(value) == 1:
        (tag, iso), = value.items()
        kind = {"$datetime": datetime.datetime, "$date": datetime.date, "$time": datetime.time}.get(tag)
        if kind is not None:
            return kind.fromisoformat(iso)
    return value


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
