"""The review view at scale: a click or a poll costs its own rows, never a pass over the sheet, and the
view stays exactly the workbook-to-be while the file is read again, written, or rewritten by synth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import editforge.review.view as view_module
from editforge.errors import EditForgeError
from editforge.review import worker
from editforge.review.index import Query
from editforge.review.session import ReviewSession
from editforge.review.view import View
from editforge.sheet.journal import Journal
from editforge.sheet.render import RenderLock
from editforge.sheet.workbook import open_workbook
from tests.helpers import SLOW_FAKE_GENERATOR, cells, make_workbook, other_process_change, run_synth


def pairs(n: int) -> list[list]:
    """n rows paired by hand: each has pictures to judge, none needs synth."""
    return [[f"img/r{i % 3}.png", "img/r1.png", None, None, f"pair {i}", "t", False] for i in range(n)]


class Counted:
    """Wraps a function of `module` and counts its calls."""

    def __init__(self, monkeypatch, module, name: str):
        self.calls = 0
        original = getattr(module, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)
        monkeypatch.setattr(module, name, counted)


@pytest.mark.parametrize("rows", [10, 300])
def test_a_click_or_a_poll_reads_no_workbook_and_rebuilds_only_its_row(tmp_path, monkeypatch, rows):
    path = make_workbook(tmp_path, pairs(rows))
    session = ReviewSession(path)
    reads = Counted(monkeypatch, view_module, "open_workbook")
    built = Counted(monkeypatch, view_module, "row_view")
    session.view().page(limit=5)
    per_page = built.calls
    assert per_page <= 5  # the page's own rows, not the sheet's
    for number in range(2, 7):
        built.calls = 0
        session.verdict(number, "accepted", seen=session.view().row(number).images)
        session.state()
        assert built.calls <= 3, "a click rebuilt more than its own row"  # shown, checked, and as it is now
        built.calls = 0
        for _ in range(3):
            session.state()  # polls: nothing changed, nothing rebuilt
        assert built.calls == 0
    assert reads.calls == 0
    assert session.state()["summary"]["accepted"] == 5 and session.waiting_updates() == 5
    session.close()


def test_the_view_lays_over_everything_a_file_read_lacks(generated, monkeypatch):
    """A snapshot of the file, read while a verdict waited and a killed synth run's picture was not in the
    workbook yet, and kept while both were written and more changes and pictures came: with the journal
    laid over it, it shows what a fresh read of the final file shows."""
    setup = ReviewSession(generated)
    for number in (3, 4):
        setup.regenerate(number, seen=setup.view().row(number).images)
    setup.close()  # rows 3 and 4 wait for synth
    synth = subprocess.Popen([sys.executable, "-m", "editforge", "synth", str(generated), "--save-every", "100"],
                             env={**os.environ, **SLOW_FAKE_GENERATOR, "EDITFORGE_FAKE_DELAY": "1"}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    with Journal.for_workbook(generated) as journal:
        deadline = time.monotonic() + 60
        while len(journal.results(status="done")) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    synth.kill()  # -9 after one picture, before the workbook got it
    synth.wait()
    with RenderLock(generated):  # a verdict that waits while the (next) synth run holds the workbook
        other = ReviewSession(generated)
        other.verdict(5, "rejected", seen=other.view().row(5).images)
        other.journal.close()
        session = ReviewSession(generated)  # reads the file now: the picture and the verdict are not in it
    stale = session.source.latest()
    assert stale.marks.unrendered and stale.marks.pending
    monkeypatch.setattr(session.source, "latest", lambda: stale)  # the newer versions are never read
    session.verdict(2, "accepted", seen=session.view().row(2).images)
    assert session.write().updates == 2  # the verdicts reach the file (and the journal says so)
    assert run_synth(generated).generated == 1  # synth renders the killed run's picture and makes the other
    fresh = ReviewSession(generated)
    assert session.view().snapshot is stale
    assert [session.view().row(n) for n in range(2, 8)] == [fresh.view().row(n) for n in range(2, 8)]
    assert [session.view().row(n).status for n in range(2, 7)] == ["accepted", "pending", "pending", "rejected",
                                                                     "queued"]
    assert session.state()["summary"] == fresh.state()["summary"] and session.waiting_updates() == 0
    fresh.close()
    session.close()


def full_view(session: ReviewSession) -> View:
    snapshot = session.view().snapshot
    return View(snapshot, session.policy).over(session.journal.results_since(session.sheet, snapshot.marks),
                                               session.journal.changes_since(session.sheet, snapshot.marks))


def test_a_view_updated_entry_by_entry_equals_one_built_at_once(generated):
    session = ReviewSession(generated)
    numbers = range(2, 8)
    steps = [
        lambda: session.verdict(2, "accepted", seen=session.view().row(2).images),
        lambda: session.verdict(2, "rejected", seen=session.view().row(2).images),
        lambda: session.regenerate(4, seen=session.view().row(4).images),
        lambda: other_process_change(generated, 3, {"review": "rejected"}),
        lambda: session.verdict(2, "", seen=session.view().row(2).images),
        # a new entry older than some laid over already (its process took its time before the write lock):
        # everything is laid over again, in time order
        lambda: (other_process_change(generated, 2, {"review": "accepted"}), backdate_last_change(generated)),
    ]
    for step in steps:
        step()
        assert [session.view().row(n) for n in numbers] == [full_view(session).row(n) for n in numbers]
        assert session.view().summary() == full_view(session).summary()
    assert session.view().row(3).verdict == "rejected" and session.view().row(2).verdict == ""
    session.close()


def backdate_last_change(path) -> None:
    with Journal.for_workbook(path) as journal, journal.transaction() as db:
        db.execute("UPDATE row_changes SET created = 0 WHERE id = (SELECT MAX(id) FROM row_changes)")


def test_big_workbooks_are_read_and_written_in_a_child_process(generated, monkeypatch):
    monkeypatch.setattr(worker, "CHILD_PROCESS_BYTES", 0)  # every workbook counts as big
    children = Counted(monkeypatch, worker.subprocess, "run")
    session = ReviewSession(generated)
    assert children.calls == 1  # the first read
    session.verdict(2, "accepted", seen=session.view().row(2).images)
    assert session.write().updates == 1 and children.calls == 2
    assert cells(generated)[2]["review"] == "accepted"
    session.view()                 # the file changed: read again, in the background, in a child
    session.source.wait(60)
    assert children.calls == 3 and session.view().snapshot.serial > 1
    assert session.view().row(2).status == "accepted"
    (generated.parent / "~$data.xlsx").write_text("")  # Excel has it: the child's error comes back as such
    session.verdict(3, "rejected", seen=session.view().row(3).images)
    assert session.write() is None and "open in Excel" in session.last_write_error
    (generated.parent / "~$data.xlsx").unlink()
    session.close()
    assert cells(generated)[3]["review"] == "rejected"


def killed() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_child_that_dies_is_a_one_line_error():
    with pytest.raises(EditForgeError, match=r"killed failed in its child process \(exit -9"):
        worker.run(killed, big=True)


def test_the_writer_spends_at_most_a_fifth_of_its_time_writing(generated, monkeypatch):
    """Rewriting a 100,000-row workbook takes a minute: verdicts arriving all the while must not keep the
    writer rewriting it back to back."""
    monkeypatch.setattr("editforge.review.session.POLL_S", 0.05)
    monkeypatch.setattr("editforge.review.session.DEBOUNCE_S", 0.0)
    starts = []

    def slow_write(workbook, **kwargs):
        starts.append(time.monotonic())
        time.sleep(0.3)
        return None  # as if a synth run held the workbook: the changes stay queued, due again
    monkeypatch.setattr("editforge.review.session.apply_updates", slow_write)
    session = ReviewSession(generated)
    session.start()
    stop = time.monotonic() + 3.0
    verdicts = ["accepted", "rejected"]
    while time.monotonic() < stop:
        session.verdict(2, verdicts[len(starts) % 2], seen=session.view().row(2).images)
        time.sleep(0.05)
    session._stop.set()
    session._writer.join()
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(starts) >= 2 and all(gap >= 0.3 / 0.2 - 0.05 for gap in gaps), gaps
    session.journal.close()


def test_a_page_holds_the_row_asked_for_or_the_next_one(generated):
    session = ReviewSession(generated)
    view = session.view()
    page = view.page(Query(), limit=2, around=5)
    assert ([r.row for r in page.rows], page.offset, page.total, page.focus) == ([4, 5], 2, 5, 5)
    assert view.page(Query(), limit=2, after=5).focus == 6
    assert view.page(Query(), limit=2, after=6).focus == 6      # the last: stays
    assert view.page(Query(), limit=2, before=4).focus == 3
    assert view.page(Query(), limit=2, around=7).focus == 6     # row 7 is blank: the nearest before the end
    pending = view.page(Query({"status": "pending"}), limit=2, around=6)  # row 6 waits for synth
    assert (pending.focus, pending.total) == (None, 4) or pending.focus == 5
    session.close()


def test_the_writer_gives_rows_their_ids_once_and_leaves_a_workbook_that_has_them(tmp_path, monkeypatch):
    """Reading a 100,000-row workbook to write it takes a minute: starting the app must not do that for one
    with nothing to write; one whose rows lack ids gets them at once (a change names its row by id)."""
    monkeypatch.setattr("editforge.review.session.POLL_S", 0.05)
    monkeypatch.setattr("editforge.review.session.DEBOUNCE_S", 0.0)
    import editforge.review.session as session_module
    writes = Counted(monkeypatch, session_module, "apply_updates")
    path = make_workbook(tmp_path, pairs(4))
    assert open_workbook(path).column("editforge_id") is None
    session = ReviewSession(path)
    session.start()
    deadline = time.monotonic() + 10
    while open_workbook(path).column("editforge_id") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    session.close()
    book = open_workbook(path)
    assert [book.get(r, "editforge_id") for r in range(2, 6)] == [book.row_id(r) for r in range(2, 6)]
    writes.calls = 0
    session = ReviewSession(path)
    session.start()
    time.sleep(0.5)
    session.close()
    assert writes.calls == 0
