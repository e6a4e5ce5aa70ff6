"""Judge scores in the dataset tools: `export --min-judge` keeps what scored at least X, `check` reports the
distribution, and the score is never mistaken for training metadata."""

from __future__ import annotations

import json

import pytest

from editforge.dataset import load_samples
from editforge.errors import EditForgeError
from editforge.sheet.workbook import open_workbook
from tests.helpers import make_dataset_workbook

SCORES = [0.9, 0.2, None, 0.5, 0.55]  # row 4: never judged; row 5: exactly at the threshold


@pytest.fixture
def judged(tmp_path):
    path = make_dataset_workbook(tmp_path, n=5)
    book = open_workbook(path)
    for row, score in enumerate(SCORES, start=2):
        book.set(row, "judge_score", score)
        book.set(row, "judge_reason", "failed: image not found" if score is None else "fine")
    book.save()
    return path


def test_min_judge_keeps_scores_at_or_above_and_says_why_the_rest_went(judged):
    data = load_samples(judged, min_judge=0.5)
    assert [s.key for s in data.samples] == ["row 2", "row 5", "row 6"]
    assert dict(data.skipped) == {"row 3": "judge_score 0.2 below 0.5", "row 4": "not judged (no judge_score)"}
    assert all("judge_score" not in s.extra and "judge_reason" not in s.extra for s in data.samples)
    assert [s.judge_score for s in load_samples(judged).samples] == SCORES


def test_min_judge_without_any_score_is_an_error(tmp_path):
    path = make_dataset_workbook(tmp_path, n=2)
    with pytest.raises(EditForgeError, match="no judge scores; run `editforge judge`"):
        load_samples(path, min_judge=0.5)


def test_export_and_check_on_the_command_line(judged, cli, tmp_path):
    code, out, err = cli("dataset", "export", judged, "--format", "diffsynth", "--out", tmp_path / "ds",
                         "--min-judge", "0.5")
    assert code == 0 and "exported 3 samples" in out
    assert "judge_score 0.2 below 0.5" in err
    code, out, _ = cli("dataset", "check", judged, "--json", "--min-side", "16")
    report = json.loads(out)
    assert report["judge"] == {"judged": 4, "not_judged": 1, "min": 0.2, "q1": 0.425, "median": 0.525, "q3": 0.6375,
                               "max": 0.9, "histogram": [0, 0, 1, 0, 0, 2, 0, 0, 0, 1]}
    code, out, _ = cli("dataset", "check", judged, "--min-side", "16")
    assert "judge_score: 4 judged (1 not), min 0.2" in out and "median 0.525" in out
