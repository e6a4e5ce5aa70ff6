"""`editforge judge WORKBOOK`: which rows are pairs, what is written where, failures per row, the journal
(resume without re-judging, a real kill -9), a person's edits during the run, and the one-line errors."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from editforge.errors import EditForgeError
from editforge.judge import Pair, judge_from_pipeline, score_pairs
from editforge.judge.workbook import JudgeOptions, judge_workbook
from editforge.images import open_rgb
from editforge.progress import Progress
from editforge.sheet.journal import Journal, journal_path
from editforge.sheet.workbook import open_workbook
from tests.helpers import make_workbook, sharp_judge

TINY = "tiny-qwen-image-edit-2509"
# raw_image, ref_image_1..3, gen_edit_prompt, instruction, need_gen
ROWS = [
    ["img/r0.png", "img/r1.png", None, None, "make it", "make it blue", False],      # 2 pair, the instruction column
    ["img/r1.png", "img/r2.png", "img/r0.png", None, "turn it red", None, False],    # 3 pair, falls back to the prompt
    ["img/gone.png", "img/r1.png", None, None, "p", "t", False],                     # 4 output missing: fails
    ["img/bad.png", "img/r1.png", None, None, "p", "t", False],                      # 5 output corrupt: fails
    [None, "img/r1.png", None, None, "p", "t", True],                                # 6 waiting for synth: no pair
    ["img/r0.png", None, None, None, "p", "t", False],                               # 7 no input: no pair
    ["img/r0.png", "../outside.png", None, None, "p", "t", False],                   # 8 path outside: fails
]


@pytest.fixture(scope="module")
def sharp(tiny_edit_plus):
    return sharp_judge(judge_from_pipeline(tiny_edit_plus))


@pytest.fixture
def book(tmp_path):
    path = make_workbook(tmp_path, ROWS)
    (tmp_path / "img" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    return path


def cells(path, *columns):
    workbook = open_workbook(path)
    return {row: tuple(workbook.get(row, c) for c in columns) for row in range(2, 9)}


def never():
    raise AssertionError("the judge was loaded although nothing was left to judge")


def test_scores_the_pairs_fails_bad_rows_and_leaves_the_rest(book, sharp):
    summary = judge_workbook(book, "sharp", lambda: sharp, JudgeOptions(reason=True, batch_size=4))
    img = book.parent / "img"
    expected = score_pairs(sharp, [
        Pair((open_rgb(img / "r1.png"),), open_rgb(img / "r0.png"), "make it blue"),
        Pair((open_rgb(img / "r2.png"), open_rgb(img / "r0.png")), open_rgb(img / "r1.png"), "turn it red"),
    ])
    got = cells(book, "judge_score", "judge_reason")
    assert [got[2][0], got[3][0]] == [round(s, 4) for s in expected]  # the right images, order and instruction
    assert got[2][0] != got[3][0]
    assert all(isinstance(got[r][1], str) and got[r][1] for r in (2, 3))  # --reason
    assert got[4][0] is None and got[4][1].startswith("failed: image not found") and "gone.png" in got[4][1]
    assert got[5][0] is None and got[5][1].startswith("failed: ") and "bad.png" in got[5][1]
    assert got[8][0] is None and got[8][1].startswith("failed: ref_image_1: ")
    assert got[6] == got[7] == (None, None)
    assert (summary.judged, summary.failed, summary.already) == (2, 3, 0)
    assert summary.exit_code == 1 and sorted(r for r, _ in summary.failures) == [4, 5, 8]

    again = judge_workbook(book, "sharp", never, JudgeOptions(reason=True))
    assert (again.judged, again.failed, again.already) == (0, 0, 5)
    assert cells(book, "judge_score", "judge_reason") == got


def test_only_changed_pairs_and_another_judge_are_judged_again(book, sharp, tiny_edit_plus):
    judge_workbook(book, "sharp", lambda: sharp)
    (book.parent / "img" / "gone.png").write_bytes((book.parent / "img" / "r2.png").read_bytes())  # appears
    workbook = open_workbook(book)
    workbook.set(2, "instruction", "make it green")
    workbook.save()
    summary = judge_workbook(book, "sharp", lambda: sharp)
    # rows 2 and 4 again; 3 unchanged; 5 and 8 failed with the same files, so not tried again (as synth does)
    assert (summary.judged, summary.failed, summary.already) == (2, 0, 3)
    assert isinstance(cells(book, "judge_score")[4][0], float)
    with Journal.for_workbook(book) as journal:
        assert journal.latest_judgements(workbook.sheet)[workbook.row_id(3)].run_id is not None
    other = judge_workbook(book, TINY, lambda: judge_from_pipeline(tiny_edit_plus))
    assert (other.judged, other.failed, other.already) == (3, 2, 0)


def test_a_reason_is_added_when_asked_later(book, sharp):
    judge_workbook(book, "sharp", lambda: sharp)
    assert cells(book, "judge_reason")[2] == (None,)
    summary = judge_workbook(book, "sharp", lambda: sharp, JudgeOptions(reason=True))
    assert summary.judged == 2 and summary.already == 3  # the failed rows have their reason already
    assert cells(book, "judge_reason")[2][0]


class PersonSavesDuringTheRun(Progress):
    """After the first judged pair, a person saves the workbook with `cells` ({(row, column): value}) of theirs."""

    def __init__(self, path, cells):
        self.path, self.cells, self.done = path, cells, False

    def advance(self, n=1, *, description=None):
        if not self.done:
            import openpyxl

            time.sleep(0.05)
            book = openpyxl.load_workbook(self.path)
            for (row, column), value in self.cells.items():
                book.active.cell(row, column, value)
            book.save(self.path)
            self.done = True


def test_a_persons_edits_during_the_run_win(book, sharp):
    summary = judge_workbook(book, "sharp", lambda: sharp, JudgeOptions(batch_size=1, save_every_rows=1),
                             progress=PersonSavesDuringTheRun(book, {
                                 (2, 20): "my note",       # a cell of their own
                                 (3, 6): "make it pink",   # row 3's instruction: its pending judgement no longer fits
                             }))
    workbook = open_workbook(book)
    got = cells(book, "judge_score", "judge_reason")
    assert workbook.get(3, "instruction") == "make it pink"
    import openpyxl

    assert openpyxl.load_workbook(book).active.cell(2, 20).value == "my note"
    assert isinstance(got[2][0], float)
    assert got[3] == (None, None)  # judged with "turn it red", now "make it pink": not written ...
    assert any("changed since the change was queued" in note for note in summary.notes)
    again = judge_workbook(book, "sharp", lambda: sharp)  # ... and judged again with the new instruction
    assert again.judged == 1 and isinstance(cells(book, "judge_score")[3][0], float)


def test_killed_run_resumes_without_judging_a_row_twice(tmp_path):
    rows = [[f"img/r{i % 3}.png", f"img/r{(i + 1) % 3}.png", None, None, f"edit {i}", None, False] for i in range(24)]
    path = make_workbook(tmp_path, rows)
    command = [sys.executable, "-m", "editforge", "judge", str(path), "--model", TINY, "--batch-size", "1",
               "--save-every", "1000", "--save-interval", "1000"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    judged = 0
    while time.monotonic() < deadline and first.poll() is None:
        if journal_path(path).exists():
            try:
                with sqlite3.connect(journal_path(path)) as db:
                    judged = db.execute("SELECT COUNT(*) FROM judgements").fetchone()[0]
            except sqlite3.OperationalError:
                judged = 0
        if judged >= 3:
            break
        time.sleep(0.02)
    assert first.poll() is None, "the run ended before it could be killed"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    with sqlite3.connect(journal_path(path)) as db:
        before = db.execute("SELECT COUNT(*) FROM judgements").fetchone()[0]
    assert 3 <= before < 24
    assert all(v == (None,) for v in cells(path, "judge_score").values())  # nothing rendered before the kill

    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"judged {24 - before}, failed 0 (+{before} judged before, unchanged)" in second.stdout
    with sqlite3.connect(journal_path(path)) as db:
        per_row = db.execute("SELECT row_id, COUNT(*) FROM judgements GROUP BY row_id").fetchall()
    assert len(per_row) == 24 and {n for _, n in per_row} == {1}
    workbook = open_workbook(path)
    assert all(isinstance(workbook.get(r, "judge_score"), float) for r in range(2, 26))


def test_a_judge_without_its_head_is_refused_before_the_workbook_is_touched(book, cli, tmp_path, tiny_edit_plus):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "vl"
    tiny_edit_plus.text_encoder.save_pretrained(folder)
    tiny_edit_plus.processor.save_pretrained(folder)
    weights = load_file(str(folder / "model.safetensors"))
    del weights["lm_head.weight"]
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    before = book.read_bytes()
    code, out, err = cli("judge", book, "--judge-model", folder)
    assert code == 2 and "lm_head.weight" in err and len(err.strip().splitlines()) == 1
    assert book.read_bytes() == before and not journal_path(book).exists()


def test_a_workbook_synth_holds_is_refused(book, sharp):
    from editforge.sheet.render import RenderLock

    with RenderLock(book):
        with pytest.raises(EditForgeError, match="is running on data.xlsx"):
            judge_workbook(book, "sharp", never)


DRAFT_HEADERS = ["raw_image", "ref_image_1", "ref_image_2", "ref_image_3", "gen_edit_prompt", "edit_prompt", "need_gen"]
DRAFT_ROWS = [
    ["img/r0.png", "img/r1.png", None, None, "make a reference", None, False],     # 2 only the generation prompt
    ["img/r1.png", "img/r2.png", None, None, "make the sample", "my words", False],  # 3 a person's instruction
    ["img/r2.png", "img/r0.png", None, None, "p", None, False],                    # 4 filled by a person mid-run
]


def draft_book(folder):
    from editforge.sheet.workbook import create_workbook

    make_workbook(folder, [])
    return create_workbook(folder / "drafts.xlsx", DRAFT_HEADERS, DRAFT_ROWS)


def test_write_instructions_drafts_only_empty_cells_marks_them_and_judges_with_them(tmp_path, sharp):
    path = draft_book(tmp_path)
    summary = judge_workbook(path, "sharp", lambda: sharp,
                             JudgeOptions(write_instructions=True, batch_size=1, save_every_rows=1),
                             progress=PersonSavesDuringTheRun(path, {(4, 6): "typed by me"}))
    assert summary.drafted == 2  # rows 2 and 4: row 4 was empty when the run read it
    book = open_workbook(path)
    draft = book.get(2, "edit_prompt")
    assert isinstance(draft, str) and draft and draft != "make a reference"
    assert book.get(2, "edit_prompt_source") == "judge"
    img = tmp_path / "img"
    expected = score_pairs(sharp, [Pair((open_rgb(img / "r1.png"),), open_rgb(img / "r0.png"), draft)])[0]
    assert book.get(2, "judge_score") == round(expected, 4)  # judged with the instruction it trains with now
    assert (book.get(3, "edit_prompt"), book.get(3, "edit_prompt_source")) == ("my words", None)
    assert (book.get(4, "edit_prompt"), book.get(4, "edit_prompt_source")) == ("typed by me", None)  # never overwritten

    again = judge_workbook(path, "sharp", lambda: sharp, JudgeOptions(write_instructions=True))
    assert again.drafted == 0 and again.judged == 1  # row 4, with the person's instruction
    assert open_workbook(path).get(2, "edit_prompt") == draft
