"""Row semantics of the original script, as a table of workbook rows, plus paths and identities."""

from __future__ import annotations

import pytest
from PIL import Image

from editforge.errors import EditForgeError
from editforge.paths import PathPolicy
from editforge.sheet.plan import plan_workbook
from editforge.sheet.schema import is_true
from editforge.sheet.workbook import create_workbook, open_workbook

HEADERS = ["raw_image", "ref_image_1", "ref_image_2", "ref_image_3", "gen_edit_prompt", "instruction", "need_gen"]


@pytest.fixture
def base(tmp_path):
    (tmp_path / "img").mkdir()
    for name in ("r.png", "a.png", "b.png", "c.png"):
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "img" / name)
    return tmp_path


def plan_rows(base, rows, suffix=".xlsx", **kwargs):
    path = create_workbook(base / f"book{suffix}", HEADERS, rows)
    return plan_workbook(open_workbook(path), PathPolicy(base, **kwargs))


# (raw, ref1, ref2, ref3, prompt, need_gen) -> (mode, target, inputs) or ("skip"/"fail", reason)
CASES = {
    "refs only -> sample from all refs": (
        (None, "img/a.png", None, "img/b.png", "combine", True), ("gen_raw", "raw_image", ["a.png", "b.png"])),
    "raw only -> first ref": (
        ("img/r.png", None, None, None, "make a ref", True), ("gen_ref", "ref_image_1", ["r.png"])),
    "raw + some refs -> first free slot": (
        ("img/r.png", "img/a.png", None, "img/b.png", "one more", True), ("gen_extra_ref", "ref_image_2", ["r.png"])),
    "raw + all refs -> skipped": (
        ("img/r.png", "img/a.png", "img/b.png", "img/c.png", "full", True), ("skip", "all ref_image slots are filled")),
    "nothing -> skipped": ((None, None, None, None, "empty", True), ("skip", "no raw_image and no ref_image")),
    "empty prompt -> skipped": (("img/r.png", None, None, None, None, True), ("skip", "empty prompt")),
    "whitespace prompt -> skipped": (("img/r.png", None, None, None, " \t ", True), ("skip", "empty prompt")),
    "whitespace-only cells are empty": (
        ("img/r.png", "  ", None, None, "p", True), ("gen_ref", "ref_image_1", ["r.png"])),
    "windows backslashes": ((None, "img\\a.png", None, None, "p", True), ("gen_raw", "raw_image", ["a.png"])),
    "need_gen text yes": (("img/r.png", None, None, None, "p", " Yes "), ("gen_ref", "ref_image_1", ["r.png"])),
    "need_gen Y": (("img/r.png", None, None, None, "p", "Y"), ("gen_ref", "ref_image_1", ["r.png"])),
    "need_gen int 1": (("img/r.png", None, None, None, "p", 1), ("gen_ref", "ref_image_1", ["r.png"])),
    "need_gen float 1.0": (("img/r.png", None, None, None, "p", 1.0), ("gen_ref", "ref_image_1", ["r.png"])),
    "need_gen text 1.0 (pandas csv)": (("img/r.png", None, None, None, "p", "1.0"), ("gen_ref", "ref_image_1", ["r.png"])),
    "int prompt is text": (("img/r.png", None, None, None, 42, True), ("gen_ref", "ref_image_1", ["r.png"])),
    "need_gen FALSE": (("img/r.png", None, None, None, "p", False), None),
    "need_gen 0": (("img/r.png", None, None, None, "p", 0), None),
    "need_gen 2": (("img/r.png", None, None, None, "p", 2), None),
    "need_gen None": (("img/r.png", None, None, None, "p", None), None),
    "need_gen no": (("img/r.png", None, None, None, "p", "no"), None),
    "missing raw fails": (("img/zz.png", None, None, None, "p", True), ("fail", "raw_image: file not found: img/zz.png")),
    "missing ref fails": ((None, "img/a.png", "img/zz.png", None, "p", True), ("fail", "ref_image_2: file not found")),
    "dot-dot leaves base": (("../secret.png", None, None, None, "p", True), ("fail", "leaves the base dir")),
    "absolute elsewhere": (("/etc/passwd", None, None, None, "p", True), ("fail", "leaves the base dir")),
    "windows absolute": (("C:\\Users\\me\\a.png", None, None, None, "p", True), ("fail", "leaves the base dir")),
    "unused ref not checked": (("img/r.png", "img/zz.png", None, None, "p", True),
                               ("gen_extra_ref", "ref_image_2", ["r.png"])),
}


@pytest.mark.parametrize("suffix", [".xlsx", ".csv"])
@pytest.mark.parametrize("name", list(CASES))
def test_row_semantics(base, name, suffix):
    (raw, r1, r2, r3, prompt, need), expected = CASES[name]
    plan = plan_rows(base, [[raw, r1, r2, r3, prompt, "train text", need]], suffix)
    outcome = ([("job", j.mode, j.target, [p.name for p in j.inputs]) for j in plan.jobs]
               + [("skip", i.reason) for i in plan.skipped] + [("fail", i.reason) for i in plan.failed])
    if expected is None:
        assert outcome == []
    elif expected[0] in ("skip", "fail"):
        assert len(outcome) == 1 and outcome[0][0] == expected[0] and expected[1] in outcome[0][1]
    else:
        assert outcome == [("job", *expected)]
        assert plan.jobs[0].row == 2


def test_absolute_path_inside_base_is_read_like_a_relative_one(base):
    plan = plan_rows(base, [[str(base / "img" / "r.png"), None, None, None, "p", "", True],
                            ["img/r.png", None, None, None, "p", "", True]])
    first, second = plan.jobs
    assert first.inputs == second.inputs
    assert first.identity != second.identity  # two identical rows are two pictures


def test_identity_is_content_and_position(base):
    rows = [["img/r.png", None, None, None, "p1", "", True], [None, "img/a.png", None, None, "p2", "", True]]
    before = [j.identity for j in plan_rows(base, rows).jobs]
    assert [j.identity for j in plan_rows(base, rows).jobs] == before
    assert [j.identity for j in plan_rows(base, [rows[0], rows[1], rows[0]]).jobs][:2] == before
    edited = plan_rows(base, [["img/r.png", None, None, None, "p1 edited", "", True],
                              [None, "img/b.png", None, None, "p2", "", True]])
    assert not set(j.identity for j in edited.jobs) & set(before)  # an edit is a different picture
    moved = plan_rows(base, [[None, None, None, None, "x", "", False], *rows])
    assert not set(j.identity for j in moved.jobs) & set(before)


def test_allow_outside(base, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "x.png"
    Image.new("RGB", (8, 8)).save(elsewhere)
    rows = [[str(elsewhere), None, None, None, "p", "", True]]
    assert plan_rows(base, rows).failed
    assert plan_rows(base, rows, allow_outside=True).jobs[0].inputs == (elsewhere,)


def test_referenced_paths_are_normalized(base):
    plan = plan_rows(base, [["img\\r.png", "./img/a.png", None, None, "p", "", False]])
    assert plan.referenced == {"img/r.png", "img/a.png"}


def test_header_missing_a_needed_column_says_how_to_map_it(base):
    path = create_workbook(base / "b.xlsx", ["raw_image", "ref_image_1", "Prompt", "need_gen"], [])
    with pytest.raises(EditForgeError, match="no gen_edit_prompt column.*`columns` gen_edit_prompt="):
        plan_workbook(open_workbook(path), PathPolicy(base))


def test_positional_workbook_plans_like_the_original_script(base):
    path = create_workbook(base / "b.xlsx", ["样本", "参考1", "参考2", "参考3", "指令", "训练", "生成"],
                           [["img/r.png", None, None, None, "加一个参考", "t", "TRUE"]])
    job, = plan_workbook(open_workbook(path), PathPolicy(base)).jobs
    assert (job.mode, job.target, job.prompt) == ("gen_ref", "ref_image_1", "加一个参考")


@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), (1, True), (1.0, True), (0, False), (2, False), ("TRUE", True), (" true ", True),
    ("1", True), ("yes", True), ("Y", True), ("n", False), ("", False), (None, False), ("maybe", False)])
def test_is_true(value, expected):
    assert is_true(value) is expected
