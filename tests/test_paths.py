"""One path rule for synth and the dataset tools: the same cell gets the same answer from both."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from editforge.dataset import load_samples
from editforge.paths import BadPath, PathPolicy
from editforge.sheet.plan import plan_workbook
from editforge.sheet.workbook import create_workbook, open_workbook


@pytest.fixture
def base(tmp_path):
    """base/img/a.png, a secret picture beside base, and links inside base: one out, one within."""
    base = tmp_path / "base"
    (base / "img").mkdir(parents=True)
    for path in (base / "img" / "a.png", tmp_path / "secret.png"):
        Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    os.symlink(tmp_path / "secret.png", base / "img" / "out.png")
    os.symlink(base / "img" / "a.png", base / "img" / "in.png")
    return base


def cells(base):
    outside = str(base.parent / "secret.png")
    return {
        "img/a.png": True, "img\\a.png": True, "./img/../img/a.png": True, str(base / "img" / "a.png"): True,
        "img/in.png": True,                      # a symlink that stays inside
        "../secret.png": False, outside: False,  # climbing out, absolute outside
        "img/out.png": False,                    # a symlink inside that points out
        "https://example.com/a.png": False, 5: False, 2.5: False,
    }


def synth_answers(path, base, allow_outside):
    plan = plan_workbook(open_workbook(path), PathPolicy(base, allow_outside=allow_outside))
    answers = {job.row: None for job in plan.jobs}
    answers.update({issue.row: issue.reason.removeprefix("raw_image: ") for issue in plan.failed})
    return [answers[row] for row in range(2, 2 + len(cells(base)))]


def dataset_answers(src, allow_outside):
    return [s.problems[0] if s.problems else None for s in load_samples(src, allow_outside=allow_outside).samples]


@pytest.mark.parametrize("allow_outside", [False, True])
def test_synth_and_the_dataset_tools_answer_every_cell_alike(base, allow_outside):
    values = cells(base)
    book = create_workbook(base / "book.xlsx", ["raw_image", "ref_image_1", "gen_edit_prompt", "need_gen"],
                           [[value, None, "make a reference", True] for value in values])
    synth = synth_answers(book, base, allow_outside)
    in_workbook = dataset_answers(book, allow_outside)
    (base / "metadata.json").write_text(json.dumps([{"image": value, "edit_image": "img/a.png", "prompt": "p"}
                                                    for value in values]))
    in_metadata = dataset_answers(base / "metadata.json", allow_outside)
    assert synth == in_workbook == in_metadata
    accepted = [answer is None for answer in synth]
    assert accepted == [ok or (allow_outside and isinstance(value, str) and "://" not in value)
                        for value, ok in values.items()]
    refused = dict(zip(values, synth))
    if not allow_outside:
        assert "through a symlink" in refused["img/out.png"] and "`allow_outside=True`" in refused["img/out.png"]
        assert "leaves the base dir" in refused["../secret.png"]
    assert refused[5] == "not a path: 5 (int, not text)" and "URL instead of a file" in refused["https://example.com/a.png"]


def test_keys_are_what_a_cell_should_hold(base):
    policy = PathPolicy(base)
    assert policy.key("img\\a.png") == policy.key(str(base / "img" / "a.png")) == "img/a.png"
    assert policy.cell_value(base / "img" / "a.png") == "img/a.png"
    assert policy.cell_value(base.parent / "secret.png") == (base.parent / "secret.png").as_posix()
    with pytest.raises(BadPath, match="leaves the base dir"):
        policy.key("C:\\Users\\me\\a.png")
    linked = base.parent / "linked-base"
    os.symlink(base, linked)  # the base dir reached through a link: both spellings are inside
    assert PathPolicy(linked).key(str(base / "img" / "a.png")) == "img/a.png"
