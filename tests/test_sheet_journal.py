"""The journal under two processes at once, and queued changes from a review app reaching the workbook."""

from __future__ import annotations

import multiprocessing

from editforge.paths import PathPolicy
from editforge.sheet.journal import Journal, journal_path
from editforge.sheet.plan import job_for_row
from editforge.sheet.render import RenderLock, SheetWriter, apply_updates
from editforge.sheet.workbook import create_workbook, open_workbook


def _hammer(path: str, worker: int, n: int) -> None:
    with Journal(path) as journal:
        for i in range(n):
            journal.record_change("s", f"id{i}", {"review": f"w{worker}"}, row=i)
            rid = journal.begin(sheet="s", identity=f"{worker}-{i}", generation=0, row=i, row_id=f"id{i}", mode="gen_ref",
                                target="ref_image_1", output=f"generated/ref/{worker}-{i}.png", seed=i,
                                run_id="run", worker=worker)
            journal.finish(rid, status="done", quality={"std": 1.0})


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
