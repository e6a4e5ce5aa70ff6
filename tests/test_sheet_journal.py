"""The journal under two processes at once, and row updates from a review app reaching the workbook."""

from __future__ import annotations

import multiprocessing

from editforge.sheet.journal import Journal, journal_path
from editforge.sheet.render import RenderLock, apply_updates, render
from editforge.sheet.workbook import create_workbook, open_workbook


def _hammer(path: str, worker: int, n: int) -> None:
    with Journal(path) as journal:
        for i in range(n):
            journal.record_update("s", i, "review", f"w{worker}")
            rid = journal.begin(sheet="s", identity=f"{worker}-{i}", generation=0, row=i, mode="gen_ref",
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
        assert len(journal.pending_updates("s")) == 300
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
    with Journal.for_workbook(book_path) as journal:
        rid = journal.begin(sheet="Sheet", identity="x", generation=0, row=2, mode="gen_ref", target="ref_image_1",
                            output="generated/ref/x.png", seed=11, run_id="r", worker=0)
        journal.finish(rid, status="done")
        journal.record_update("Sheet", 2, "review", "bad")        # after the result: lands on top
        journal.record_update("Sheet", 2, "need_gen", True)       # the reviewer asks for it again
        journal.record_update("Sheet", 3, "review", "good")
        book = open_workbook(book_path)
        stats = render(book, journal)
        assert (stats.results, stats.updates, stats.saved) == (1, 3, True)
        assert render(book, journal).saved is False  # nothing new: the file is not touched
    book = open_workbook(book_path)
    assert [v for _, v in book.rows()] == [
        {"raw_image": "a.png", "ref_image_1": "generated/ref/x.png", "gen_edit_prompt": "p", "need_gen": True,
         "gen_seed": 11, "gen_status": "done", "review": "bad"},
        {"raw_image": "b.png", "ref_image_1": None, "gen_edit_prompt": "p", "need_gen": True,
         "gen_seed": None, "gen_status": None, "review": "good"}]


def test_apply_updates_waits_for_a_running_synth(tmp_path):
    book_path = create_workbook(tmp_path / "a.csv", ["raw_image", "review"], [["a.png", None]])
    with Journal.for_workbook(book_path) as journal:
        journal.record_update("", 2, "review", "ok")
    with RenderLock(book_path):  # what `editforge synth` holds while it runs
        assert apply_updates(book_path) is None
        assert open_workbook(book_path).get(2, "review") is None
    assert apply_updates(book_path) == 1
    assert open_workbook(book_path).get(2, "review") == "ok"
    assert apply_updates(book_path) == 0
    assert journal_path(book_path).exists()
