"""The review row index: filters, counts, sort orders and pages, checked against plain Python on every row."""

from __future__ import annotations

import math
import random

import pytest

from editforge.errors import EditForgeError
from editforge.review.index import FIELDS, Field, Query, RowIndex
from editforge.review.rows import MODES, STATUSES, RowView


def row_view(row: int, status: str, mode: str, contrast: float | None, change: float | None = None) -> RowView:
    quality = None if contrast is None else {"std": contrast, **({} if change is None else {"input_diff_p995": change})}
    return RowView(row=row, row_id=f"id{row}", images={"raw_image": f"r{row}.png"}, prompt="p", instruction="p",
                   need_gen=status == "queued", gen_status="", verdict=status if status in ("accepted", "rejected") else "",
                   generated="raw_image", mode=mode, seed=None, quality=quality)


def random_rows(rng: random.Random, numbers) -> list[RowView]:
    # few distinct contrasts: ties must go by row number; None: no quality (sorted last, either way)
    return [row_view(n, rng.choice(STATUSES), rng.choice(MODES), rng.choice([None, 5.0, 12.5, 12.5, 40.0, 3.25]),
                     rng.choice([None, 1.0, 9.0])) for n in numbers]


def expected(rows: list[RowView], filters: dict, sort: str, descending: bool) -> list[int]:
    """What a query must return, written out plainly, independent of the index."""
    def value(r: RowView, name: str):
        return {"row": r.row, "status": r.status, "mode": r.mode, "contrast": (r.quality or {}).get("std"),
                "change": (r.quality or {}).get("input_diff_p995")}[name]

    def keep(r: RowView) -> bool:
        for name, wanted in filters.items():
            v = value(r, name)
            if isinstance(wanted, tuple):
                low, high = wanted
                if v is None or (low is not None and v < low) or (high is not None and v > high):
                    return False
            elif v != wanted:
                return False
        return True

    def key(r: RowView):
        v = value(r, sort)
        if isinstance(v, str):
            v = FIELDS[sort].choices.index(v)
        unknown = v is None
        return (unknown, 0 if unknown else (-v if descending else v), r.row)

    return [r.row for r in sorted(filter(keep, rows), key=key)]


QUERIES = [
    ({}, "row", False), ({}, "row", True), ({"status": "pending"}, "row", False),
    ({"mode": "gen_raw"}, "contrast", False), ({}, "contrast", True), ({"status": "accepted"}, "change", False),
    ({"contrast": (5.0, 12.5)}, "row", False), ({"contrast": (None, 12.5), "mode": "none"}, "contrast", True),
    ({"change": (2.0, None)}, "status", False),
]


@pytest.mark.parametrize("filters, sort, descending", QUERIES)
def test_a_query_selects_and_orders_the_rows_as_plain_python_does(filters, sort, descending):
    rng = random.Random(7)
    base = random_rows(rng, range(2, 302))
    index = RowIndex(base)
    # the journal changed some rows: new values, rows that left the view (None), rows that joined it
    now = {r.row: r for r in base}
    touched = {}
    for number in rng.sample(range(2, 320), 60):
        changed = random_rows(rng, [number])[0] if rng.random() < 0.8 else None
        touched[number] = changed
        if changed is None:
            now.pop(number, None)
        else:
            now[number] = changed
    query = Query(filters, sort=sort, descending=descending)
    selection = index.select(query, touched)
    want = expected(list(now.values()), filters, sort, descending)
    assert selection.total == len(want)
    assert selection.rows(0, selection.total) == want
    assert [selection.rows(start, start + 7) for start in range(0, len(want), 7)] == \
        [want[start:start + 7] for start in range(0, len(want), 7)]  # page by page
    for number in rng.sample(range(2, 320), 20):  # where a row is, or would be
        if number in now:
            key = query.sort_key(now[number])
            assert selection.rank(key) == sum(1 for r in want if _before(now[r], now[number], sort, descending))


def _before(a: RowView, b: RowView, sort: str, descending: bool) -> bool:
    return expected([a, b], {}, sort, descending)[0] == a.row and a.row != b.row


def test_counts_are_per_status():
    index = RowIndex([row_view(2, "pending", "gen_raw", 1.0), row_view(3, "accepted", "gen_raw", 1.0),
                      row_view(4, "queued", "none", None), row_view(5, "accepted", "gen_ref", 2.0)])
    assert index.counts == {"pending": 1, "accepted": 2, "rejected": 0, "queued": 1}


def test_unknown_fields_and_values_are_one_line_errors():
    with pytest.raises(EditForgeError, match="cannot sort by 'score'"):
        Query(sort="score")
    with pytest.raises(EditForgeError, match="unknown status 'maybe'"):
        Query({"status": "maybe"})
    with pytest.raises(EditForgeError, match="filter contrast by a range"):
        Query({"contrast": 3})


def test_a_new_number_column_is_one_field(monkeypatch):
    """What issue 17's judge score needs: a Field, and the index filters and sorts by it."""
    monkeypatch.setitem(FIELDS, "seed", Field("seed", "seed", lambda r: r.seed))
    rows = [RowView(**{**row_view(n, "pending", "gen_raw", 1.0).__dict__, "seed": seed})
            for n, seed in ((2, 30), (3, None), (4, 10), (5, 20))]
    selection = RowIndex(rows).select(Query({"seed": (15, None)}, sort="seed", descending=True), {})
    assert selection.rows(0, 10) == [2, 5]
    assert RowIndex(rows).select(Query(sort="seed"), {}).rows(0, 10) == [4, 5, 2, 3]
    assert math.isnan(FIELDS["seed"].value(rows[1]))
