"""Filters, counts and sort orders over the rows of one workbook version, as arrays.

What the page can filter and sort by is data: `FIELDS`, each a function of a `RowView`. A category
(status, mode) filters by equality; a number (the row, the quality gate's metrics) filters by a
range and sorts. Adding a column to sort and filter by (a judge's score) is one `Field` line.

A `RowIndex` holds every field of every row of a snapshot as numpy arrays, built once per workbook
version. The journal's newer entries change a few rows ("touched": row -> its RowView now, None if
it left the view); a `Selection` combines the arrays, minus the touched rows' old entries, with the
touched rows' new ones. Per request that is a few vectorised passes over the arrays (about a
millisecond for 100,000 rows) and work in proportion to the touched rows and the page, never a
Python loop over the sheet.

    index = RowIndex(views)                             # views: every RowView of the snapshot, in sheet order
    selection = index.select(Query({"status": "pending"}, sort="contrast"), touched={})
    selection.total, selection.find(12, "around"), selection.rows(0, 50)
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from editforge.errors import EditForgeError
from editforge.review.rows import MODES, STATUSES, RowView


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    of: Callable[[RowView], Any]
    choices: tuple[str, ...] | None = None   # a category; None: a number (None or NaN: unknown, sorted last)

    def value(self, row: RowView) -> float:
        """The row's value as the index stores it: a category's position in `choices`, or the number."""
        value = self.of(row)
        if self.choices is not None:
            return float(self.choices.index(value))
        return math.nan if value is None else float(value)


def _quality(metric: str) -> Callable[[RowView], float | None]:
    return lambda row: (row.quality or {}).get(metric)


FIELDS: dict[str, Field] = {f.name: f for f in (
    Field("row", "sheet order", lambda row: row.row),
    Field("status", "status", lambda row: row.status, STATUSES),
    Field("mode", "mode", lambda row: row.mode, MODES),
    Field("contrast", "contrast", _quality("std")),
    Field("change", "change vs input", _quality("input_diff_p995")),
    Field("judge", "judge score", lambda row: row.judge_score),
)}


@dataclass(frozen=True)
class Query:
    """Which rows, in which order: `filters` maps a category field to a value, a number field to
    (low, high) with None for an open end; `sort` a field, `descending` its direction."""

    filters: Mapping[str, Any] = field(default_factory=dict)
    sort: str = "row"
    descending: bool = False

    def __post_init__(self):
        if self.sort not in FIELDS:
            raise EditForgeError(f"cannot sort by {self.sort!r}; use one of {', '.join(FIELDS)}")
        for name, wanted in self.filters.items():
            spec = FIELDS.get(name)
            if spec is None:
                raise EditForgeError(f"cannot filter by {name!r}; use one of {', '.join(FIELDS)}")
            if spec.choices is not None and wanted not in spec.choices:
                raise EditForgeError(f"unknown {name} {wanted!r}; use one of {', '.join(spec.choices)}")
            if spec.choices is None and not (isinstance(wanted, tuple) and len(wanted) == 2):
                raise EditForgeError(f"filter {name} by a range (low, high)")

    def key(self) -> tuple:
        return tuple(sorted((k, v) for k, v in self.filters.items())), self.sort, self.descending

    def matches(self, row: RowView) -> bool:
        for name, wanted in self.filters.items():
            value = FIELDS[name].of(row)
            if FIELDS[name].choices is not None:
                if value != wanted:
                    return False
            elif value is None or math.isnan(value) or not _in_range(value, wanted):
                return False
        return True

    def sort_key(self, row: RowView) -> tuple[float, int]:
        return _ordering(FIELDS[self.sort].value(row), self.descending), row.row


def _in_range(value: float, bounds: tuple[float | None, float | None]) -> bool:
    low, high = bounds
    return (low is None or value >= low) and (high is None or value <= high)


def _ordering(value, descending: bool):
    """Sort key of a value: unknown (NaN) last in both directions."""
    value = np.where(np.isnan(value), np.inf, -value if descending else value)
    return float(value) if value.ndim == 0 else value


class RowIndex:
    def __init__(self, views: Iterable[RowView]):
        rows: list[int] = []
        columns: dict[str, list[float]] = {name: [] for name in FIELDS}
        for view in views:
            rows.append(view.row)
            for name, spec in FIELDS.items():
                columns[name].append(spec.value(view))
        self.rows = np.array(rows, dtype=np.int64)  # sheet order: ascending
        self.values = {name: np.array(values, dtype=np.float64) for name, values in columns.items()}
        status = self.values["status"].astype(np.int64)
        self.counts = dict(zip(STATUSES, np.bincount(status, minlength=len(STATUSES)).tolist()))
        self._orders: dict[tuple[str, bool], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def position(self, row: int) -> int | None:
        at = int(np.searchsorted(self.rows, row))
        return at if at < len(self.rows) and self.rows[at] == row else None

    def status(self, position: int) -> str:
        return STATUSES[int(self.values["status"][position])]

    def order(self, sort: str, descending: bool) -> tuple[np.ndarray, np.ndarray]:
        """(positions in sort order, the sort key of every position); ties go by row number."""
        key = _ordering(self.values[sort], descending)
        if (sort, descending) not in self._orders:
            self._orders[sort, descending] = np.lexsort((self.rows, key))
        return self._orders[sort, descending], key

    def mask(self, query: Query) -> np.ndarray:
        mask = np.ones(len(self.rows), dtype=bool)
        for name, wanted in query.filters.items():
            values = self.values[name]
            if FIELDS[name].choices is not None:
                mask &= values == FIELDS[name].choices.index(wanted)
            else:
                low, high = wanted
                with np.errstate(invalid="ignore"):
                    mask &= ~np.isnan(values)
                    if low is not None:
                        mask &= values >= low
                    if high is not None:
                        mask &= values <= high
        return mask

    def select(self, query: Query, touched: Mapping[int, RowView | None]) -> "Selection":
        return Selection(self, query, touched)


class Selection:
    """The rows a query selects, in its order: the index's, with the touched rows' entries replaced."""

    def __init__(self, index: RowIndex, query: Query, touched: Mapping[int, RowView | None]):
        self.index, self.query = index, query
        mask = index.mask(query)
        for row in touched:
            at = index.position(row)
            if at is not None:
                mask[at] = False  # its entry is stale: the touched one below replaces it
        self.order, self.keys = index.order(query.sort, query.descending)
        selected = mask[self.order]
        self.hits = self.order[selected]                                  # positions, in order
        self.before = np.concatenate(([0], np.cumsum(selected)))          # hits among the first n of order
        extra = sorted((query.sort_key(view), view.row) for view in touched.values()
                       if view is not None and query.matches(view))
        self.extra_keys = [key for key, _ in extra]
        # where each touched row lands among all: the hits before it, plus the touched rows before it
        self.extra_at = [int(self.before[self._base_rank(key)]) + i for i, key in enumerate(self.extra_keys)]
        self.extra_rows = [row for _, row in extra]
        self.total = len(self.hits) + len(extra)

    def _base_rank(self, key: tuple[float, int], right: bool = False) -> int:
        """How many of the index's rows (selected or not) sort before `key` (or at it, `right`)."""
        search = bisect.bisect_right if right else bisect.bisect_left
        return search(self.order, key, key=lambda at: (self.keys[at], self.index.rows[at]))

    def rank(self, key: tuple[float, int], right: bool = False) -> int:
        """Where `key` falls among the selected rows: how many sort before it (or at it, `right`)."""
        extra = (bisect.bisect_right if right else bisect.bisect_left)(self.extra_keys, key)
        return int(self.before[self._base_rank(key, right)]) + extra

    def rows(self, start: int, stop: int) -> list[int]:
        """Row numbers of the selected rows start..stop-1, in order."""
        out = []
        extra = bisect.bisect_left(self.extra_at, start)  # touched rows placed before `start`
        for at in range(max(start, 0), min(stop, self.total)):
            if extra < len(self.extra_at) and self.extra_at[extra] == at:
                out.append(self.extra_rows[extra])
                extra += 1
            else:
                out.append(int(self.index.rows[self.hits[at - extra]]))
        return out
