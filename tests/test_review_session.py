"""The review backend without a browser: what it shows, verdicts, regeneration, and writes racing synth."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from editforge.errors import EditForgeError
from editforge.inference.metadata import read_params
from editforge.review.session import Conflict, ReviewSession
from editforge.sheet.schema import parse_verdict
from editforge.sheet.journal import Journal
from editforge.sheet.render import RenderLock
from editforge.sheet.workbook import open_workbook
from tests.helpers import REVIEW_ROWS, SLOW_FAKE_GENERATOR, cells, make_workbook, run_synth

def session_for(path: Path, **kwargs) -> ReviewSession:
    return ReviewSession(path, **kwargs)


def test_the_view_shows_generated_rows_with_mode_seed_quality_and_status(generated):
    session = session_for(generated)
    view = session.view()
    by_row = {r.row: r for r in view.page(limit=100).rows}
    assert sorted(by_row) == [2, 3, 4, 5, 6]
    assert [(by_row[r].mode, by_row[r].generated, by_row[r].status) for r in (2, 3, 4, 5, 6)] == [
        ("gen_ref", "ref_image_1", "pending"), ("gen_raw", "raw_image", "pending"),
        ("gen_extra_ref", "ref_image_2", "pending"), ("none", None, "pending"), ("none", None, "queued")]
    book = cells(generated)
    assert by_row[3].seed == book[3]["gen_seed"] and by_row[3].quality["std"] > 20
    assert by_row[3].images == {"raw_image": book[3]["raw_image"], "ref_image_1": "img/r1.png",
                                "ref_image_2": "img/r2.png"}
    assert by_row[6].gen_status.startswith("failed: raw_image: file not found")
    assert view.summary() == {"pending": 4, "accepted": 0, "rejected": 0, "queued": 1}
    session.close()


def test_without_a_journal_png_metadata_still_tells_the_generated_picture(generated):
    os.remove(str(generated) + ".journal.sqlite")  # lost, or the workbook moved without it
    session = session_for(generated)
    row = session.view().row(3)
    assert (row.generated, row.mode, row.seed) == ("raw_image", "gen_raw", cells(generated)[3]["gen_seed"])
    session.close()


def test_verdicts_reach_the_review_column_and_show_at_once(generated):
    session = session_for(generated)
    seen = session.view().row(2).images
    assert session.verdict(2, "accepted", seen=seen).status == "accepted"   # shown before it is written
    assert session.verdict(3, "rejected", seen=session.view().row(3).images).status == "rejected"
    assert cells(generated)[2].get("review") is None                         # queued in the journal
    assert session.write().updates == 2
    book = cells(generated)
    assert (book[2]["review"], book[3]["review"]) == ("accepted", "rejected")
    session.verdict(2, "", seen=seen)  # undo
    session.write()
    assert cells(generated)[2]["review"] is None
    assert session.view().summary() == {"pending": 3, "accepted": 0, "rejected": 1, "queued": 1}
    session.close()


def test_a_verdict_on_a_row_that_changed_meanwhile_is_refused(generated):
    session = session_for(generated)
    old = session.view().row(2).images
    with Journal.for_workbook(generated) as journal:  # synth wrote a new picture into row 2
        journal.record_change("Sheet", open_workbook(generated).row_id(2), {"ref_image_1": "generated/ref/newer.png"},
                              row=2)
    with pytest.raises(Conflict, match="row 2 changed since you looked"):
        session.verdict(2, "accepted", seen=old)
    with pytest.raises(EditForgeError, match="unknown verdict"):
        session.verdict(2, "maybe", seen=session.view().row(2).images)
    with pytest.raises(EditForgeError, match="row 7 has no pictures"):
        session.verdict(7, "accepted", seen={})
    with pytest.raises(EditForgeError, match="row 6 is waiting for `editforge synth`"):
        session.verdict(6, "accepted", seen=session.view().row(6).images)
    session.close()


def test_regenerate_moves_the_picture_clears_the_cell_and_synth_redoes_the_row(generated, tmp_path):
    session = session_for(generated)
    session.verdict(3, "rejected", seen=session.view().row(3).images)
    before = cells(generated)[3]
    old_file = tmp_path / before["raw_image"]
    old_bytes = old_file.read_bytes()
    row, moved = session.regenerate(3, seen=session.view().row(3).images)
    assert row.status == "queued" and row.verdict == "" and "raw_image" not in row.images
    with pytest.raises(EditForgeError, match="waiting for `editforge synth`"):  # a second press does nothing
        session.regenerate(3, seen=row.images)
    assert moved == tmp_path / "rejected" / before["raw_image"] and moved.read_bytes() == old_bytes
    assert not old_file.exists()
    session.write()
    after = cells(generated)[3]
    assert (after["raw_image"], after["need_gen"], after["review"]) == (None, True, None)

    summary = run_synth(generated)  # the next synth: same job, new generation, new seed
    assert summary.generated == 1
    redone = cells(generated)[3]
    assert redone["raw_image"].startswith("generated/raw/") and redone["raw_image"] != before["raw_image"]
    assert redone["gen_seed"] != before["gen_seed"]
    assert read_params(tmp_path / redone["raw_image"])["seed"] == redone["gen_seed"]
    assert session.view().row(3).status == "pending"
    session.close()


def test_regenerating_twice_keeps_both_old_pictures(generated, tmp_path):
    session = session_for(generated)
    first = cells(generated)[2]["ref_image_1"]
    session.regenerate(2, seen=session.view().row(2).images)
    session.write()
    run_synth(generated)
    # a picture of the same name already in rejected/ is not overwritten
    second = cells(generated)[2]["ref_image_1"]
    (tmp_path / "rejected" / second).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "rejected" / second).write_bytes(b"someone else's")
    _, moved = session.regenerate(2, seen=session.view().row(2).images)
    assert moved.name == Path(second).stem + "-1.png"
    assert (tmp_path / "rejected" / first).is_file() and (tmp_path / "rejected" / second).read_bytes() == b"someone else's"
    session.close()


def test_regenerate_refuses_rows_without_a_generated_picture(generated, tmp_path):
    session = session_for(generated)
    with pytest.raises(EditForgeError, match="row 5 has no generated picture"):
        session.regenerate(5, seen=session.view().row(5).images)
    assert (tmp_path / "img" / "r0.png").is_file() and not (tmp_path / "rejected").exists()
    session.close()


def test_pictures_outside_the_base_dir_are_neither_served_nor_moved(tmp_path):
    path = make_workbook(tmp_path / "book", REVIEW_ROWS[:1])
    run_synth(path, seed=1, allow_outside=True, out_ref="../elsewhere")  # synth --allow-outside --out-ref ../elsewhere
    session = session_for(path)
    row = session.view().row(2)
    assert row.generated == "ref_image_1" and session.relative(row.images["ref_image_1"]) is None
    with pytest.raises(EditForgeError, match="outside the base dir"):
        session.regenerate(2, seen=row.images)
    assert len(list((tmp_path / "elsewhere").iterdir())) == 1
    session.close()


def test_a_picture_already_gone_still_regenerates(generated, tmp_path):
    session = session_for(generated)
    (tmp_path / cells(generated)[4]["ref_image_2"]).unlink()
    row, moved = session.regenerate(4, seen=session.view().row(4).images)
    assert moved is None and row.status == "queued"
    session.close()


def test_updates_wait_while_synth_holds_the_workbook_and_the_writer_thread_applies_them_after(generated, monkeypatch):
    monkeypatch.setattr("editforge.review.session.POLL_S", 0.1)
    monkeypatch.setattr("editforge.review.session.DEBOUNCE_S", 0.0)
    session = session_for(generated)
    session.start()
    with RenderLock(generated):  # what a running `editforge synth` holds
        session.verdict(2, "accepted", seen=session.view().row(2).images)
        time.sleep(0.5)
        assert session.write() is None and session.waiting_updates() == 1
        assert cells(generated)[2].get("review") is None
    deadline = time.monotonic() + 10
    while session.waiting_updates() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cells(generated)[2]["review"] == "accepted"
    session.close()


def test_a_workbook_open_in_excel_keeps_the_verdicts_queued(generated, tmp_path):
    session = session_for(generated)
    session.verdict(2, "accepted", seen=session.view().row(2).images)
    lock = tmp_path / "~$data.xlsx"
    lock.write_text("")
    assert session.write() is None and "open in Excel" in session.last_write_error
    lock.unlink()
    session.close()  # writes what is still queued
    assert cells(generated)[2]["review"] == "accepted"


def test_csv_workbooks_get_text_true(tmp_path):
    path = make_workbook(tmp_path, REVIEW_ROWS[:1], name="data.csv")
    run_synth(path, seed=1)
    session = session_for(path)
    session.regenerate(2, seen=session.view().row(2).images)
    session.close()
    assert cells(path)[2]["need_gen"] == "TRUE"


def test_verdicts_typed_by_hand_count():
    assert [parse_verdict(v) for v in ("Accepted", " ok ", "BAD", "rejected", None, "later")] == [
        "accepted", "accepted", "rejected", "rejected", "", ""]


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(EditForgeError, match="workbook not found"):
        ReviewSession(tmp_path / "nope.xlsx")
    path = make_workbook(tmp_path, REVIEW_ROWS[:1])
    with pytest.raises(EditForgeError, match="base dir not found"):
        ReviewSession(path, base_dir=tmp_path / "missing")


# -- a review session while `editforge synth` runs in another process ----------------------------------

def test_review_while_synth_runs_loses_no_update_from_either(tmp_path):
    """Verdicts on finished rows while synth fills 30 others, saving after every row: all land."""
    reviewed = [[f"img/r{i % 3}.png", "img/r1.png", None, None, f"done {i}", "t", False] for i in range(20)]
    todo = [[f"img/r{i % 3}.png", None, None, None, f"make {i}", "t", True] for i in range(30)]
    path = make_workbook(tmp_path, reviewed + todo)
    session = session_for(path)
    session.start()
    synth = subprocess.Popen(
        [sys.executable, "-m", "editforge", "synth", str(path), "--seed", "3", "--save-every", "1"],
        env={**os.environ, **SLOW_FAKE_GENERATOR}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not session.journal.results(status="done") and time.monotonic() < deadline:
            time.sleep(0.02)  # synth is generating and saving the workbook after every row from here on
        verdicts = {}
        for i, row in enumerate(range(2, 22)):
            verdict = "accepted" if i % 3 else "rejected"
            session.verdict(row, verdict, seen=session.view().row(row).images)
            verdicts[row] = verdict
            time.sleep(0.05)
        assert synth.poll() is None, "synth ended before the verdicts: the test proves nothing"
        out, err = synth.communicate(timeout=120)
    finally:
        synth.kill() if synth.poll() is None else None
    assert synth.returncode == 0, err
    assert "generated 30" in out
    session.close()
    book = cells(path)
    assert {row: book[row]["review"] for row in verdicts} == verdicts
    assert all(book[row]["raw_image"] == raw_of(row) and book[row]["ref_image_2"] is None for row in verdicts)
    made = [book[row] for row in range(22, 52)]
    assert all(r["ref_image_1"].startswith("generated/ref/") and r["gen_status"] == "done" for r in made)
    assert all((tmp_path / r["ref_image_1"]).is_file() for r in made)
    with Journal.for_workbook(path) as journal:
        assert journal.pending_changes("Sheet") == []


def raw_of(row: int) -> str:
    return f"img/r{(row - 2) % 3}.png"


def test_a_picture_that_cannot_be_moved_leaves_the_row_as_it_was(generated, tmp_path):
    session = session_for(generated)
    (tmp_path / "rejected").write_text("a file where the folder should go")
    seen = session.view().row(2).images
    with pytest.raises(EditForgeError, match="cannot move generated/ref/.* into rejected/"):
        session.regenerate(2, seen=seen)
    assert (tmp_path / seen["ref_image_1"]).is_file() and session.waiting_updates() == 0
    with pytest.raises(EditForgeError, match="`seen` must map"):
        session.verdict(2, "accepted", seen=["raw_image"])
    session.close()


def test_the_training_instruction_is_shown_as_the_exporter_reads_it(generated):
    session = session_for(generated)
    row = session.view().row(2)
    assert (row.prompt, row.instruction) == ("make a reference", "t")  # the `instruction` column
    session.close()
