"""The synth run in-process with fake generators: results, reruns, seeds, the gate, failures, recovery."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import openpyxl
import pytest
import torch
from openpyxl.comments import Comment
from openpyxl.styles import Font
from PIL import Image

from editforge.errors import EditForgeError
from editforge.inference.metadata import read_params
from editforge.sheet.fake import fake_generator
from editforge.sheet.journal import Journal
from editforge.sheet.synth import SynthOptions, dry_run
from editforge.sheet.workbook import open_workbook
from tests.helpers import ONE_OF_EACH, SYNTH_HEADERS as HEADERS, cell_paths, make_workbook, outputs, run_synth

def test_each_mode_fills_its_cell_and_reports(tmp_path):
    path = make_workbook(tmp_path)
    summary = run_synth(path, seed=7)
    assert (summary.generated, summary.skipped, summary.failed) == (3, 1, 1)
    assert summary.line() == "generated 3, skipped 1, failed 1" and summary.exit_code == 1
    rows = dict(open_workbook(path).rows())
    assert rows[2]["ref_image_1"].startswith("generated/ref/") and rows[2]["need_gen"] is False
    assert rows[3]["raw_image"].startswith("generated/raw/") and rows[3]["need_gen"] == "FALSE"
    assert rows[4]["ref_image_2"].startswith("generated/ref/") and rows[4]["need_gen"] == 0
    assert [rows[r]["gen_status"] for r in range(2, 8)] == [
        "done", "done", "done", "skipped: empty prompt", "failed: raw_image: file not found: img/nope.png", None]
    assert all(isinstance(rows[r]["gen_seed"], int) for r in (2, 3, 4))
    ids = [rows[r]["editforge_id"] for r in range(2, 8)]
    assert len(set(ids)) == 6 and all(i.startswith("ef") for i in ids)  # every row got its identity
    assert rows[7] == dict(zip(HEADERS, ONE_OF_EACH[5]), gen_seed=None, gen_status=None, editforge_id=ids[5])
    assert outputs(tmp_path) == cell_paths(path) - {"img/r0.png", "img/r1.png", "img\\r2.png", "img/nope.png"}
    params = read_params(tmp_path / rows[3]["raw_image"])
    assert params["seed"] == rows[3]["gen_seed"] and params["row"] == 3 and params["mode"] == "gen_raw"
    with Journal.for_workbook(path) as journal:
        done = journal.results(status="done")
        assert len(done) == 3 and all(r.rendered and r.quality["std"] > 20 for r in done)


def test_a_second_run_has_nothing_to_do_and_leaves_the_file_alone(tmp_path):
    path = make_workbook(tmp_path)
    run_synth(path, seed=7)
    before = path.read_bytes()
    calls = []
    summary = run_synth(path, lambda images, prompt, seed: calls.append(seed), seed=7)
    assert calls == [] and summary.generated == 0
    assert path.read_bytes() == before


def test_same_seed_same_pictures(tmp_path):
    first = make_workbook(tmp_path / "a")
    run_synth(first, seed=123)
    second = make_workbook(tmp_path / "b")  # a fresh copy with a fresh journal
    run_synth(second, seed=123)
    a, b = dict(open_workbook(first).rows()), dict(open_workbook(second).rows())
    for row, column in ((2, "ref_image_1"), (3, "raw_image"), (4, "ref_image_2")):
        assert a[row]["gen_seed"] == b[row]["gen_seed"]
        pixels = [np.asarray(Image.open(folder / rows[row][column]))
                  for folder, rows in ((tmp_path / "a", a), (tmp_path / "b", b))]
        assert np.array_equal(*pixels)
    third = make_workbook(tmp_path / "c")
    run_synth(third, seed=124)
    assert dict(open_workbook(third).rows())[2]["gen_seed"] != a[2]["gen_seed"]


def test_without_seed_a_random_one_is_kept_in_the_journal(tmp_path):
    path = make_workbook(tmp_path)
    summary = run_synth(path)
    with Journal.for_workbook(path) as journal:
        assert journal.meta("base_seed") == str(summary.base_seed)


def test_quality_gate_retries_with_the_next_seed_then_fails(tmp_path):
    path = make_workbook(tmp_path, rows=[ONE_OF_EACH[0], ONE_OF_EACH[1]])
    good = fake_generator()
    seeds = []

    def black_first(images, prompt, seed):
        seeds.append((prompt, seed))
        first = [s for p, s in seeds if p == prompt][0]
        if prompt == "make the sample" or seed == first:  # the sample row never recovers
            return Image.new("RGB", (64, 64)), {}
        return good(images, prompt, seed)

    summary = run_synth(path, black_first, seed=1, retries=2)
    rows = dict(open_workbook(path).rows())
    ref_seeds = [s for p, s in seeds if p == "make a reference"]
    assert len(ref_seeds) == 2 and ref_seeds[1] == ref_seeds[0] + 1 and rows[2]["gen_seed"] == ref_seeds[1]
    assert rows[2]["gen_status"] == "done"
    assert len([s for p, s in seeds if p == "make the sample"]) == 3
    assert rows[3]["gen_status"].startswith("failed: quality gate: black") and rows[3]["raw_image"] is None
    assert rows[3]["need_gen"] == "yes" and summary.failed == 1
    with Journal.for_workbook(path) as journal:
        failed, = journal.results(status="failed")
        assert failed.quality["mean"] == 0
    assert len(outputs(tmp_path)) == 1  # a failed row leaves no picture


def test_an_unedited_copy_of_the_input_is_caught(tmp_path):
    path = make_workbook(tmp_path, rows=[ONE_OF_EACH[0]])
    summary = run_synth(path, lambda images, prompt, seed: (images[0].copy(), {}), retries=0)
    assert summary.failed == 1
    assert "unchanged" in dict(open_workbook(path).rows())[2]["gen_status"]


def test_out_of_memory_and_crashes_fail_one_row_not_the_run(tmp_path):
    path = make_workbook(tmp_path, rows=[ONE_OF_EACH[0], ONE_OF_EACH[1], ONE_OF_EACH[2]])
    good = fake_generator()

    def flaky(images, prompt, seed):
        if prompt == "make a reference":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if prompt == "make the sample":
            raise ValueError("shapes do not match\nlong traceback text")
        return good(images, prompt, seed)

    summary = run_synth(path, flaky)
    rows = dict(open_workbook(path).rows())
    assert rows[2]["gen_status"].startswith("failed: out of memory")
    assert rows[3]["gen_status"] == "failed: ValueError: shapes do not match"
    assert rows[4]["gen_status"] == "done"
    assert (summary.generated, summary.failed, summary.exit_code) == (1, 2, 1)


def test_a_generator_that_always_crashes_stops_the_run(tmp_path):
    path = make_workbook(tmp_path, rows=[ONE_OF_EACH[0]] * 12)

    def broken(images, prompt, seed):
        raise RuntimeError("device-side assert triggered")

    with pytest.raises(EditForgeError, match="10 rows in a row failed"):
        run_synth(path, broken)
    assert dict(open_workbook(path).rows())[2]["gen_status"].startswith("failed: RuntimeError")


def test_unreadable_input_fails_its_row(tmp_path):
    path = make_workbook(tmp_path, rows=[ONE_OF_EACH[0], ["img/bad.png", None, None, None, "p", "t", True]])
    (tmp_path / "img" / "bad.png").write_bytes(b"not a png")
    summary = run_synth(path)
    rows = dict(open_workbook(path).rows())
    assert rows[3]["gen_status"].startswith("failed: not a readable image")
    assert (summary.generated, summary.failed) == (1, 1)


def test_excel_lock_means_nothing_is_written(tmp_path):
    path = make_workbook(tmp_path)
    (tmp_path / "~$data.xlsx").write_bytes(b"")
    before = path.read_bytes()
    with pytest.raises(EditForgeError, match="open in Excel"):
        run_synth(path)
    assert path.read_bytes() == before and outputs(tmp_path) == set()
    assert not (tmp_path / "data.xlsx.journal.sqlite").exists()


def _kill_before_render(path: Path, **options) -> None:
    """Generate and journal, then put back the workbook as it was: a kill just before the render."""
    saved = path.read_bytes()
    run_synth(path, **options)
    path.write_bytes(saved)
    with Journal.for_workbook(path) as journal:
        journal.db.execute("UPDATE results SET rendered = 0")


def test_results_journaled_before_a_kill_are_rendered_not_regenerated(tmp_path):
    path = make_workbook(tmp_path, rows=ONE_OF_EACH[:3])
    _kill_before_render(path, seed=5)
    made = outputs(tmp_path)
    calls = []
    summary = run_synth(path, lambda *a: calls.append(a), seed=5)
    assert calls == [] and summary.recovered == 3
    assert outputs(tmp_path) == made == cell_paths(path) - {"img/r0.png", "img/r1.png", "img\\r2.png"}


def test_a_row_changed_since_journaling_is_planned_again(tmp_path):
    path = make_workbook(tmp_path, rows=ONE_OF_EACH[:1])
    _kill_before_render(path, seed=5)
    stale, = outputs(tmp_path)
    book = open_workbook(path)
    book.set(2, "gen_edit_prompt", "a different edit")
    book.save()
    summary = run_synth(path, seed=5)
    fresh = dict(open_workbook(path).rows())[2]["ref_image_1"]
    assert summary.generated == 1 and summary.recovered == 0
    assert fresh != stale and outputs(tmp_path) == {fresh}  # the stale picture is gone


def test_a_row_changed_and_changed_back_is_generated_afresh(tmp_path):
    """The superseded result's generation is used up: the row gets the next one, not a journal conflict."""
    path = make_workbook(tmp_path, rows=ONE_OF_EACH[:1])
    _kill_before_render(path, seed=5)
    for prompt in ("a different edit", ONE_OF_EACH[0][4]):
        book = open_workbook(path)
        book.set(2, "gen_edit_prompt", prompt)
        book.set(2, "ref_image_1", None)
        book.set(2, "need_gen", True)
        book.save()
        if prompt == "a different edit":
            _kill_before_render(path, seed=5)  # superseded on the next run's reconcile
    summary = run_synth(path, seed=5)
    assert summary.generated == 1 and summary.exit_code == 0
    row = dict(open_workbook(path).rows())[2]
    assert row["gen_status"] == "done" and outputs(tmp_path) == {row["ref_image_1"]}


def test_an_image_renamed_but_not_journaled_is_cleaned_up(tmp_path):
    path = make_workbook(tmp_path, rows=ONE_OF_EACH[:1])
    _kill_before_render(path, seed=5)
    with Journal.for_workbook(path) as journal:  # the kill came between the rename and `done`
        journal.db.execute("UPDATE results SET status = 'running'")
        orphan, = outputs(tmp_path)
    (tmp_path / Path(orphan).parent / f".{Path(orphan).name}.tmp-999").write_bytes(b"half")
    summary = run_synth(path, seed=5)
    rows = dict(open_workbook(path).rows())
    assert summary.generated == 1 and outputs(tmp_path) == {rows[2]["ref_image_1"]}
    with Journal.for_workbook(path) as journal:
        assert [r.status for r in journal.results()] == ["done"]  # the failed try was replaced


def test_a_row_asked_for_again_gets_a_new_picture(tmp_path):
    path = make_workbook(tmp_path, rows=ONE_OF_EACH[:1])
    run_synth(path, seed=5)
    first = dict(open_workbook(path).rows())[2]
    book = open_workbook(path)  # the reviewer throws the reference away
    book.set(2, "ref_image_1", None)
    book.set(2, "need_gen", True)
    book.save()
    run_synth(path, seed=5)
    second = dict(open_workbook(path).rows())[2]
    assert second["gen_status"] == "done" and second["gen_seed"] != first["gen_seed"]
    assert second["ref_image_1"] != first["ref_image_1"]


def test_max_rows_and_ctrl_c(tmp_path):
    path = make_workbook(tmp_path, rows=[ONE_OF_EACH[0]] * 6)
    assert run_synth(path, max_rows=2).generated == 2
    good, calls = fake_generator(), []

    def interrupted_on_third(images, prompt, seed):
        calls.append(seed)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return good(images, prompt, seed)

    summary = run_synth(path, interrupted_on_third, save_every_rows=1000, save_every_seconds=1000)
    assert summary.interrupted and summary.exit_code == 130 and summary.generated == 2
    statuses = [v["gen_status"] for _, v in open_workbook(path).rows()]
    assert statuses.count("done") == 4  # saved at the interrupt
    with Journal.for_workbook(path) as journal:
        assert [r.status for r in journal.results()].count("running") == 1  # the interrupted row
    assert run_synth(path).generated == 2
    assert len(outputs(tmp_path)) == 6 == len(cell_paths(path)) - 1


def test_review_updates_recorded_during_a_run_reach_the_workbook(tmp_path):
    path = make_workbook(tmp_path, rows=ONE_OF_EACH[:3])
    good = fake_generator()
    row_id = open_workbook(path).row_id(4)  # the id the run gives row 4 (the same in every copy of the file)

    def with_reviewer(images, prompt, seed):
        with Journal.for_workbook(path) as journal:  # another process would open its own connection
            journal.record_change("Sheet", row_id, {"review": f"seen {prompt}"}, row=4)
        return good(images, prompt, seed)

    run_synth(path, with_reviewer, save_every_rows=1)
    book = open_workbook(path)
    assert book.get(4, "review") == "seen one more ref" and book.row_id(4) == row_id
    assert [book.headers[c] for c in range(8, 12)] == ["editforge_id", "gen_seed", "gen_status", "review"]


def test_the_run_keeps_formulas_styles_widths_comments_and_other_sheets(tmp_path):
    path = make_workbook(tmp_path, rows=[])
    wb = openpyxl.load_workbook(path)
    ws = wb.active
    ws.append(["img/r0.png", None, None, None, "edit", "t", True])
    ws.append([])
    ws.append(["img/r1.png", None, None, None, "edit", "t", False])
    ws["H2"] = "=LEN(E2)"
    ws["E2"].font = Font(italic=True)
    ws["E2"].comment = Comment("careful", "me")
    ws.column_dimensions["E"].width = 55
    wb.create_sheet("stats")["B2"] = "=COUNTA(data!A:A)"
    wb.save(path)
    run_synth(path)
    wb = openpyxl.load_workbook(path)
    ws = wb.active
    assert ws["H2"].value == "=LEN(E2)" and ws["E2"].font.italic and ws["E2"].comment.text == "careful"
    assert ws.column_dimensions["E"].width == 55 and wb["stats"]["B2"].value == "=COUNTA(data!A:A)"
    assert [c.value for c in ws[1]][7:] == [None, "editforge_id", "gen_seed", "gen_status"]  # after the last used
    assert ws["K2"].value == "done" and all(c.value is None for c in ws[3])  # a blank row gets no id


def test_csv_workbooks_work_the_same(tmp_path):
    path = make_workbook(tmp_path, name="data.csv")
    summary = run_synth(path)
    assert (summary.generated, summary.skipped, summary.failed) == (3, 1, 1)
    assert "FALSE" in path.read_text() and "generated/ref/" in path.read_text()


def test_dry_run_reports_the_plan_and_writes_nothing(tmp_path):
    path = make_workbook(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    text = dry_run(path, SynthOptions())
    assert "gen_raw        1" in text and "gen_ref        1" in text and "gen_extra_ref  1" in text
    assert "empty prompt: row 5" in text and "file not found: img/nope.png: row 6" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_outputs_go_where_asked_and_must_stay_inside_the_base(tmp_path):
    path = make_workbook(tmp_path, rows=ONE_OF_EACH[:2])
    run_synth(path, out_raw="made/samples", out_ref="made/refs")
    rows = dict(open_workbook(path).rows())
    assert rows[2]["ref_image_1"].startswith("made/refs/") and rows[3]["raw_image"].startswith("made/samples/")
    with pytest.raises(EditForgeError, match="output folder"):
        run_synth(make_workbook(tmp_path / "b"), out_raw="../elsewhere")
    shutil.rmtree(tmp_path / "made")


def test_a_briefly_held_lock_is_waited_out_a_held_one_refused(tmp_path, monkeypatch):
    """A review app holds the workbook's lock while it saves its queued verdicts: synth waits, then runs."""
    import threading

    from editforge.sheet import synth as synth_module
    from editforge.sheet.render import RenderLock

    path = make_workbook(tmp_path)
    lock = RenderLock(path)
    lock.acquire()
    threading.Timer(0.5, lock.release).start()
    assert run_synth(path, seed=1).generated == 3

    monkeypatch.setattr(synth_module, "LOCK_WAIT_SECONDS", 0.3)
    with RenderLock(path):
        with pytest.raises(EditForgeError, match="another `editforge synth` is running"):
            run_synth(path, seed=1)


def test_a_regeneration_queued_during_a_killed_run_is_made_by_the_next_run(tmp_path):
    """The review app queues its writes while synth holds the workbook; if that run dies before writing
    them, the next run writes them before it plans, so it redoes the row at once (not one run later)."""
    path = make_workbook(tmp_path, rows=ONE_OF_EACH[:1])
    run_synth(path, seed=5)
    first = dict(open_workbook(path).rows())[2]["ref_image_1"]
    with Journal.for_workbook(path) as journal:  # what `review` records for "regenerate"
        book = open_workbook(path)
        journal.record_change(book.sheet, book.row_id(2), {"ref_image_1": None, "need_gen": True}, row=2)
    summary = run_synth(path, seed=5)
    row = dict(open_workbook(path).rows())[2]
    assert summary.generated == 1 and row["ref_image_1"] not in (None, first) and row["need_gen"] is False


class CheckedGenerator:
    """A fake generator with the cheap input check real ones have (a tokenizer's limit, here 50 words)."""

    def __init__(self):
        self.made, self.checked, self.good = [], [], fake_generator()

    def check(self, images, prompt):
        self.checked.append(prompt)
        if len(prompt.split()) > 50:
            raise EditForgeError(f"the prompt is {len(prompt.split())} words; this model reads at most 50")

    def __call__(self, images, prompt, seed):
        self.made.append(prompt)
        return self.good(images, prompt, seed)


def test_rows_failing_their_own_input_check_neither_stop_the_run_nor_come_back(tmp_path):
    long = " ".join(["word"] * 5000)
    rows = ([[f"img/r{i % 3}.png", None, None, None, f"{long} {i}", "t", True] for i in range(12)]
            + [[f"img/r{i % 3}.png", None, None, None, f"good {i}", "t", True] for i in range(5)])
    path = make_workbook(tmp_path, rows=rows)
    generator = CheckedGenerator()
    summary = run_synth(path, generator, seed=1)
    assert (summary.generated, summary.failed) == (5, 12)  # twelve failures in a row, and no stop
    assert generator.made == [f"good {i}" for i in range(5)]  # no model work for a prompt the check refused
    assert dict(open_workbook(path).rows())[2]["gen_status"] == "failed: the prompt is 5001 words; this model reads at most 50"
    again = CheckedGenerator()
    summary = run_synth(path, again, seed=1)  # nothing changed: the failed rows are not tried again
    assert again.checked == [] and (summary.generated, summary.failed, summary.failed_before) == (0, 0, 12)
    assert "+12 failed in an earlier run, not retried: `retry_failed=True`" in summary.line() and summary.exit_code == 1
    Image.new("RGB", (32, 32), (9, 9, 9)).save(tmp_path / "img" / "r0.png")  # new inputs for rows 2, 5, 8, 11
    summary = run_synth(path, again, seed=1)
    assert len(again.checked) == 4 and summary.failed_before == 8
    summary = run_synth(path, again, seed=1, retry_failed=True)
    assert len(again.checked) == 4 + 12 and summary.failed == 12 and summary.failed_before == 0


def test_systemic_failures_stop_the_run_whatever_input_failures_come_between(tmp_path):
    long = " ".join(["word"] * 60)
    rows = [["img/r0.png", None, None, None, long if i % 2 else f"crash {i}", "t", True] for i in range(24)]
    path = make_workbook(tmp_path, rows=rows)
    generator = CheckedGenerator()
    generator.good = lambda images, prompt, seed: (_ for _ in ()).throw(RuntimeError("CUDA error: device lost"))
    with pytest.raises(EditForgeError, match="10 rows in a row failed; last: RuntimeError: CUDA error"):
        run_synth(path, generator)
    assert len(generator.made) == 10  # the input failures in between did not reset the count
