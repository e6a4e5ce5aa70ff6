"""The review app's row data carries the judge's score and reason, including judgements still queued in the
journal (not yet in the workbook); the server sorts and filters by the score."""

from __future__ import annotations

from editforge.judge import judge_from_pipeline
from editforge.judge.workbook import JudgeOptions, judge_workbook
from editforge.sheet.journal import Journal
from editforge.sheet.workbook import open_workbook
from tests.helpers import Served


def test_rows_carry_judge_score_and_reason(tmp_path, tiny_edit_plus):
    served = Served(tmp_path)
    try:
        judge = judge_from_pipeline(tiny_edit_plus)
        judge_workbook(served.path, "tiny", lambda: judge, JudgeOptions(reason=True))
        book = open_workbook(served.path)
        _, data = served.json("GET", "/api/rows")
        rows = {r["row"]: r for r in data["rows"]}
        judged = [n for n in rows if book.get(n, "judge_score") is not None]
        assert judged == [2, 3, 4, 5]
        for n in judged:
            assert rows[n]["judge_score"] == book.get(n, "judge_score")
            assert rows[n]["judge_reason"] == book.get(n, "judge_reason") != ""
        assert rows[6]["judge_score"] is None and rows[6]["judge_reason"] == ""

        with Journal.for_workbook(served.path) as journal:  # a judgement queued, not yet rendered
            journal.record_change(book.sheet, book.row_id(2), {"judge_score": 0.125, "judge_reason": "queued"}, row=2)
        _, data = served.json("GET", "/api/rows/2")
        assert (data["row"]["judge_score"], data["row"]["judge_reason"]) == (0.125, "queued")

        scores = {n: book.get(n, "judge_score") for n in judged} | {2: 0.125}
        _, data = served.json("GET", "/api/rows?sort=judge")  # lowest first, the unjudged row last
        assert [r["row"] for r in data["rows"]] == sorted(judged, key=scores.get) + [6]
        _, data = served.json("GET", "/api/rows?sort=-judge&judge_min=0.2")
        assert [r["row"] for r in data["rows"]] == sorted((n for n in judged if scores[n] >= 0.2),
                                                          key=scores.get, reverse=True)
    finally:
        served.stop()
