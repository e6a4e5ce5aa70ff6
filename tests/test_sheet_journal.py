"""The journal under two processes at once, and queued changes from a review app reaching the workbook."""

from __future__ import annotations

import pytest
import hashlib
import json
import multiprocessing
import shutil
import sqlite3

import openpyxl

from editforge.paths import PathPolicy
from editforge.sheet.fake import fake_generator
from editforge.sheet.journal import Journal, journal_path
from editforge.sheet.plan import job_for_row
from editforge.sheet.render import RenderLock, SheetWriter, apply_updates
from editforge.sheet.workbook import create_workbook, open_workbook
from tests.helpers import ONE_OF_EACH, make_workbook, outputs, run_synth


def _hammer(path: str, worker: int, n: int) -> None:
    with Journal(path) as journal:
        for i in range(n):
            journal.record_change("s", f"id{i}", {"review": f"w{worker}"}, row=i)
            rid = journal.begin(sheet="s", identity=f"{worker}-{i}", generation=0, row=i, row_id=f"id{i}", mode="gen_ref",
                                target="ref_image_1", output=f"generated/ref/{worker}-{i}.png", seed=i,
                                run_id="run", worker=worker)
            journal.finish(rid, status="done", quality={"std": 1.0})


@pytest.mark.slow
def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "j.sqlite")
    Journal(path).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_hammer, args=(path, w, 150)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Journal(path) as journal:
        assert journal.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert len(journal.pending_changes("s")) == 300
        assert journal.counts("run") == {"done": 300}
        assert len(journal.latest_by_identity("s")) == 300


def test_meta_only_if_absent_keeps_the_first_value(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        assert journal.set_meta("base_seed", "5", only_if_absent=True) == "5"
        assert journal.set_meta("base_seed", "6", only_if_absent=True) == "5"
        assert journal.set_meta("base_seed", "7") == "7"


def test_updates_and_results_render_in_time_order_exactly_once(tmp_path):
    book_path = create_workbook(tmp_path / "a.xlsx", ["raw_image", "ref_image_1", "gen_edit_prompt", "need_gen"],
                                [["a.png", None, "p", True], ["b.png", None, "p", True]])
    policy = PathPolicy(tmp_path, allow_outside=True)
    with Journal.for_workbook(book_path) as journal:
        writer = SheetWriter(book_path, journal, policy)
        job = job_for_row(writer.book, 2, policy)
        first, second = writer.book.row_id(2), writer.book.row_id(3)
        rid = journal.begin(sheet="Sheet", identity=job.identity, generation=0, row=2, row_id=first, mode=job.mode,
                            target=job.target, output="generated/ref/x.png", seed=11, run_id="r", worker=0)
        journal.finish(rid, status="done")
        journal.record_change("Sheet", first, {"review": "bad"}, row=2)       # after the result: lands on top
        journal.record_change("Sheet", first, {"need_gen": True}, row=2)      # the reviewer asks for it again
        journal.record_change("Sheet", second, {"review": "good"}, row=3)
        stats = writer.render()
        assert (stats.results, stats.updates, stats.saved) == (1, 3, True)
        assert writer.render().saved is False  # nothing new: the file is not touched
    book = open_workbook(book_path)
    assert [v for _, v in book.rows()] == [
        {"raw_image": "a.png", "ref_image_1": "generated/ref/x.png", "gen_edit_prompt": "p", "need_gen": True,
         "editforge_id": first, "gen_seed": 11, "gen_status": "done", "review": "bad"},
        {"raw_image": "b.png", "ref_image_1": None, "gen_edit_prompt": "p", "need_gen": True,
         "editforge_id": second, "gen_seed": None, "gen_status": None, "review": "good"}]


def test_apply_updates_waits_for_a_running_synth(tmp_path):
    book_path = create_workbook(tmp_path / "a.csv", ["raw_image", "review"], [["a.png", None]])
    with Journal.for_workbook(book_path) as journal:
        journal.record_change("", open_workbook(book_path).row_id(2), {"review": "ok"}, row=2)
    with RenderLock(book_path):  # what `editforge synth` holds while it runs
        assert apply_updates(book_path) is None
        assert open_workbook(book_path).get(2, "review") is None
    assert apply_updates(book_path).updates == 1
    assert open_workbook(book_path).get(2, "review") == "ok"
    assert apply_updates(book_path).updates == 0
    assert journal_path(book_path).exists()


# The journal as EditForge wrote it before row ids (schema version 1), for the migration test.
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE results (id INTEGER PRIMARY KEY, sheet TEXT NOT NULL, identity TEXT NOT NULL,
    generation INTEGER NOT NULL, row INTEGER NOT NULL, mode TEXT NOT NULL, target TEXT NOT NULL,
    output TEXT NOT NULL, status TEXT NOT NULL, seed INTEGER, quality TEXT, error TEXT, run_id TEXT,
    worker INTEGER, started REAL, finished REAL, rendered INTEGER NOT NULL DEFAULT 0,
    UNIQUE (sheet, identity, generation));
CREATE TABLE row_updates (id INTEGER PRIMARY KEY, sheet TEXT NOT NULL, row INTEGER NOT NULL,
    column TEXT NOT NULL, value TEXT NOT NULL, source TEXT, created REAL NOT NULL, applied REAL);
"""


def test_a_journal_from_before_row_ids_is_migrated_and_its_work_kept(tmp_path):
    """A run of the old version was killed after journaling row 2's picture, with a review update queued
    for row 3: the new version renders that picture (no second generation) and applies the update."""
    path = make_workbook(tmp_path, rows=ONE_OF_EACH[:2])
    legacy = hashlib.sha256(json.dumps([2, "gen_ref", "ref_image_1", "make a reference", ["img/r0.png"]],
                                       ensure_ascii=False).encode()).hexdigest()[:32]
    (tmp_path / "generated" / "ref").mkdir(parents=True)
    shutil.copy(tmp_path / "img" / "r0.png", tmp_path / "generated" / "ref" / "old.png")  # the picture it made
    db = sqlite3.connect(journal_path(path))
    db.executescript(V1_SCHEMA)
    db.execute("INSERT INTO meta VALUES ('base_seed', '5')")
    db.execute("INSERT INTO results (sheet, identity, generation, row, mode, target, output, status, seed, finished)"
               " VALUES ('Sheet', ?, 0, 2, 'gen_ref', 'ref_image_1', 'generated/ref/old.png', 'done', 77, 1.0)",
               (legacy,))
    db.execute("INSERT INTO row_updates (sheet, row, column, value, created) VALUES ('Sheet', 3, 'review', '\"ok\"', 2.0)")
    db.commit()
    db.close()
    calls, good = [], fake_generator()
    summary = run_synth(path, lambda images, prompt, seed: calls.append(prompt) or good(images, prompt, seed))
    assert summary.recovered == 1 and calls == ["make the sample"]  # row 2 was not generated again
    rows = dict(open_workbook(path).rows())
    assert (rows[2]["ref_image_1"], rows[2]["gen_seed"]) == ("generated/ref/old.png", 77)
    assert rows[3]["review"] == "ok" and rows[3]["gen_status"] == "done"
    with Journal.for_workbook(path) as journal:
        assert journal.meta("schema_version") == "2" and journal.pending_changes("Sheet") == []
        assert {r.row_id for r in journal.results()} == {rows[2]["editforge_id"], rows[3]["editforge_id"]}
    assert "generated/ref/old.png" in outputs(tmp_path)


def v1_journal_with_a_queued_review(path) -> None:
    db = sqlite3.connect(journal_path(path))
    db.executescript(V1_SCHEMA)
    db.execute("INSERT INTO row_updates (sheet, row, column, value, created) VALUES ('Sheet', 3, 'review', '\"ok\"', 2.0)")
    db.commit()
    db.close()


def insert_a_row(path) -> None:
    wb = openpyxl.load_workbook(path)
    wb.active.insert_rows(2)
    wb.active["E2"] = "someone's new row"
    wb.save(path)


def test_a_change_queued_before_row_ids_follows_its_row_or_waits_never_lands_elsewhere(tmp_path):
    path = make_workbook(tmp_path / "saved", rows=ONE_OF_EACH[:3])
    v1_journal_with_a_queued_review(path)
    with Journal.for_workbook(path) as journal:
        writer = SheetWriter(path, journal, PathPolicy(path.parent))  # the first look: row 3 is "make the sample"
        writer.render(changes=False)  # the rows' ids are saved
        insert_a_row(path)  # then someone inserts a row and saves before the change is written
        assert writer.render().updates == 1
    rows = dict(open_workbook(path).rows())
    assert (rows[4]["gen_edit_prompt"], rows[4]["review"], rows[3].get("review")) == ("make the sample", "ok", None)

    path = make_workbook(tmp_path / "unsaved", rows=ONE_OF_EACH[:3])
    v1_journal_with_a_queued_review(path)
    with Journal.for_workbook(path) as journal:
        writer = SheetWriter(path, journal, PathPolicy(path.parent))
        insert_a_row(path)  # before the ids reached the file: position 3 is another row now
        stats = writer.render()
    assert stats.updates == 0 and "changed since the change was queued (gen_edit_prompt)" in stats.held[0]
    assert all(v.get("review") is None for _, v in open_workbook(path).rows())
