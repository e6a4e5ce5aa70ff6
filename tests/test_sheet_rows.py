"""Row identity and saves into a person's document: sorts, inserts, pasted copies, saves made meanwhile."""

from __future__ import annotations

import openpyxl
import pytest

from editforge.inference.metadata import read_params
from editforge.paths import PathPolicy
from editforge.review.session import ReviewSession
from editforge.sheet.fake import fake_generator
from editforge.sheet.journal import Journal
from editforge.sheet.render import RenderLock, SheetWriter, apply_updates
from editforge.sheet.workbook import WorkbookChanged, open_workbook
from tests.helpers import REVIEW_ROWS, ONE_OF_EACH, cell_paths, make_workbook, outputs, run_synth


def edit(path, change) -> None:
    """What a person does in a spreadsheet program: open, change, save in place."""
    wb = openpyxl.load_workbook(path)
    change(wb.active)
    wb.save(path)


def rows_by_prompt(path) -> dict[str, dict]:
    return {v["gen_edit_prompt"]: {**v, "row": r} for r, v in open_workbook(path).rows() if v["gen_edit_prompt"]}


def test_ids_travel_with_rows_so_a_sort_keeps_results_of_a_killed_run(tmp_path):
    path = make_workbook(tmp_path, rows=ONE_OF_EACH[:3])
    apply_updates(path)  # any EditForge write gives the rows their ids
    ids = {p: v["editforge_id"] for p, v in rows_by_prompt(path).items()}
    saved = path.read_bytes()
    run_synth(path, seed=5)  # generate and journal ...
    path.write_bytes(saved)  # ... then the kill comes before the workbook was written
    with Journal.for_workbook(path) as journal:
        journal.db.execute("UPDATE results SET rendered = 0")

    def reverse(ws):  # the person sorts the rows, Z to A
        rows = [[c.value for c in row] for row in ws.iter_rows(min_row=2)]
        for r, values in enumerate(reversed(rows), 2):
            for c, value in enumerate(values, 1):
                ws.cell(r, c).value = value
    edit(path, reverse)
    calls = []
    summary = run_synth(path, lambda *a: calls.append(a), seed=5)
    assert calls == [] and summary.recovered == 3  # nothing made twice: the jobs hang on the ids
    after = rows_by_prompt(path)
    assert [after[p]["row"] for p in ("make a reference", "make the sample", "one more ref")] == [4, 3, 2]
    for prompt, row in after.items():  # every picture is on the row it was made for
        made, = [v for k, v in row.items() if k.startswith(("raw", "ref")) and str(v).startswith("generated/")]
        params = read_params(tmp_path / made)
        assert params["prompt"] == prompt and params["row_id"] == row["editforge_id"] == ids[prompt]


def test_an_inserted_row_gets_a_new_id_and_a_pasted_copy_a_new_one_too(tmp_path):
    path = make_workbook(tmp_path, rows=ONE_OF_EACH[:2])
    apply_updates(path)
    first, second = (open_workbook(path).row_id(r) for r in (2, 3))

    def insert_and_paste(ws):
        ws.insert_rows(2)
        ws["E2"] = "a new row"
        ws.append([c.value for c in ws[4]])  # a copy of the second row, id and all
    edit(path, insert_and_paste)
    streamed = open_workbook(path, read_only=True)
    list(streamed.records(["raw_image"]))  # ids indexed during a pass: the new row 2 must not take row 3's
    assert (streamed.row_id(3), streamed.row_id(4)) == (first, second) and streamed.row_id(2) not in (first, second)
    apply_updates(path)
    book = open_workbook(path)
    assert (book.row_id(3), book.row_id(4)) == (first, second)  # moved down, same identity
    assert len({book.row_id(r) for r in (2, 3, 4, 5)}) == 4 and book.row_of(second) == 4  # the original keeps it
    assert book.get(5, "editforge_id") == book.row_id(5) != second


def test_queued_verdicts_and_regenerations_land_on_their_rows_after_an_insert(tmp_path):
    """The issue's case: Excel (here a synth run) holds the workbook while the reviewer works; the person
    inserts a row and saves; the queued changes then reach the rows they were made for, nothing else."""
    path = make_workbook(tmp_path, REVIEW_ROWS)
    run_synth(path, seed=7)
    session = ReviewSession(path)
    raw_of_3 = session.view().row(3).images["raw_image"]
    with RenderLock(path):  # a synth run holds the workbook: every change waits in the journal
        session.verdict(2, "accepted", seen=session.view().row(2).images)
        session.regenerate(3, seen=session.view().row(3).images)
        edit(path, lambda ws: (ws.insert_rows(2), [ws.cell(2, c, v) for c, v in enumerate(
            ["img/r2.png", "img/r1.png", None, None, "made by hand", "t", False], 1)]))
        assert session.write() is None
    stats = session.write()
    assert (stats.updates, stats.held) == (2, [])
    book = dict(open_workbook(path).rows())
    assert (book[2]["gen_edit_prompt"], book[2]["ref_image_1"], book[2]["need_gen"], book[2].get("review")) == (
        "made by hand", "img/r1.png", False, None)  # the inserted row is untouched
    assert (book[3]["gen_edit_prompt"], book[3]["review"]) == ("make a reference", "accepted")
    assert (book[4]["gen_edit_prompt"], book[4]["raw_image"], book[4]["need_gen"]) == ("make the sample", None, True)
    assert (tmp_path / "rejected" / raw_of_3).is_file()
    session.close()


def test_a_change_whose_row_is_gone_or_changed_stays_queued_and_says_why(tmp_path):
    path = make_workbook(tmp_path, REVIEW_ROWS)
    run_synth(path, seed=7)
    session = ReviewSession(path)
    with RenderLock(path):
        session.verdict(2, "accepted", seen=session.view().row(2).images)
        session.verdict(3, "rejected", seen=session.view().row(3).images)
        session.verdict(4, "accepted", seen=session.view().row(4).images)
        gone = session.view().row(2).row_id

        def delete_and_replace(ws):
            ws.delete_rows(2)          # row 2 is deleted: rows 3, 4 move up to 2, 3
            ws["A2"] = "img/r2.png"    # and the picture judged in (old) row 3 is replaced by hand
        edit(path, delete_and_replace)
    stats = session.write()
    assert stats.updates == 1 and len(stats.held) == 2
    assert f"row 2 (id {gone}) is no longer in the sheet" in stats.held
    assert "row 2 (row 3 when queued) changed since the change was queued (raw_image)" in stats.held
    assert session.last_held.startswith("2 queued change(s) kept in the journal: ")
    book = dict(open_workbook(path).rows())
    assert [book[r].get("review") for r in (2, 3)] == [None, "accepted"]  # only old row 4's verdict, on its row
    assert session.waiting_updates() == 2
    session.close()


def test_a_save_made_after_editforge_read_the_file_is_kept(tmp_path):
    path = make_workbook(tmp_path, REVIEW_ROWS)
    run_synth(path, seed=7)
    with Journal.for_workbook(path) as journal:
        writer = SheetWriter(path, journal, PathPolicy(tmp_path))
        target = writer.book.row_id(3)
        edit(path, lambda ws: (ws.insert_rows(2), ws.cell(2, 5, "inserted by a person"), ws.cell(5, 6, "a note")))
        with pytest.raises(WorkbookChanged):  # the book as read must never be saved over the person's file
            writer.book.save()
        journal.record_change("Sheet", target, {"review": "accepted"}, row=3)
        assert writer.render().saved
    book = dict(open_workbook(path).rows())
    assert book[2]["gen_edit_prompt"] == "inserted by a person" and book[5]["instruction"] == "a note"
    assert book[4]["review"] == "accepted" and book[4]["editforge_id"] == target
    with open(str(path) + ".bak", "rb") as fh:
        backup = openpyxl.load_workbook(fh).active  # .bak: the person's version
    assert backup["E2"].value == "inserted by a person" and backup["K4"].value is None


def test_a_result_whose_row_the_person_changed_is_not_written_and_is_redone(tmp_path):
    path = make_workbook(tmp_path, rows=ONE_OF_EACH[:2])
    good, calls = fake_generator(), []

    def person_edits_while_generating(images, prompt, seed):
        calls.append(prompt)
        if prompt == "make a reference":  # the person rewrites this very row's prompt meanwhile
            edit(path, lambda ws: ws.cell(2, 5, "a better prompt"))
        return good(images, prompt, seed)

    summary = run_synth(path, person_edits_while_generating, seed=3, save_every_rows=1)
    assert summary.stale == 1 and "not written: their rows changed" in summary.line()
    row = dict(open_workbook(path).rows())[2]
    assert (row["gen_edit_prompt"], row["ref_image_1"], row["need_gen"]) == ("a better prompt", None, True)
    summary = run_synth(path, person_edits_while_generating, seed=3)
    row = dict(open_workbook(path).rows())[2]
    assert summary.generated == 1 and calls[-1] == "a better prompt" and row["gen_status"] == "done"
    assert outputs(tmp_path) == cell_paths(path) - {"img/r0.png", "img/r1.png", "img\\r2.png"}  # stale one deleted


def test_a_save_from_an_older_copy_does_not_lose_results_and_keeps_the_persons_edit(tmp_path):
    """A program that opened the file before EditForge's last save saves it back: its edit stays, and the
    results that save dropped (their rows still ask for them) are written again."""
    path = make_workbook(tmp_path, rows=ONE_OF_EACH[:3])
    good, held = fake_generator(), {}

    def older_copy(images, prompt, seed):
        if prompt == "make a reference":
            held["wb"] = openpyxl.load_workbook(path)  # opened before the run's first result is saved
        if prompt == "one more ref":  # rows 2 and 3 are saved by now (--save-every 1)
            assert open_workbook(path).get(2, "gen_status") == "done"
            held["wb"].active["F3"] = "the person's note"
            held["wb"].save(path)
        return good(images, prompt, seed)

    summary = run_synth(path, older_copy, seed=2, save_every_rows=1)
    rows = dict(open_workbook(path).rows())
    assert summary.generated == 3 and [rows[r]["gen_status"] for r in (2, 3, 4)] == ["done"] * 3
    assert rows[3]["instruction"] == "the person's note"
    assert outputs(tmp_path) == cell_paths(path) - {"img/r0.png", "img/r1.png", "img\\r2.png"}
