"""One row as the review page shows it (`RowView`), built from any book-like source of cells.

`row_view` reads the cells through `get(row, name)` / `row_id(row)`, so it builds a row from a
workbook snapshot as read and from one with the journal's newer entries laid over it alike
(view.py). Which picture is the generated one comes from the journal (`made(output)`: the pictures
synth made, by path) or, without a journal entry, from the PNG's own metadata.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

from editforge.inference.metadata import read_params
from editforge.paths import BadPath, PathPolicy
from editforge.sheet.schema import (
    ACCEPTED, GEN_SEED, GEN_STATUS, IMAGE_KEYS, JUDGE_REASON, JUDGE_SCORE, NEED_GEN, PROMPT, REJECTED, REVIEW,
    cell_text, is_true, parse_verdict,
)

STATUSES = ("pending", ACCEPTED, REJECTED, "queued")   # queued: need_gen is set, synth has work to do
MODES = ("gen_raw", "gen_ref", "gen_extra_ref", "none")


@dataclass(frozen=True)
class RowView:
    row: int
    row_id: str                     # the row's identity (editforge_id), what changes are queued against
    images: dict[str, str]          # column key -> cell text, filled cells only, raw first
    prompt: str                     # the generation prompt (gen_edit_prompt)
    instruction: str                # the training instruction the exporter will use
    need_gen: bool
    gen_status: str
    verdict: str                    # accepted | rejected | "" (none yet)
    generated: str | None           # the column key holding the generated picture, if known
    mode: str                       # gen_raw | gen_ref | gen_extra_ref | none
    seed: int | None
    quality: dict | None
    judge_score: float | None = None  # `editforge judge`'s P(yes) for the row's pair (queued ones included)
    judge_reason: str = ""            # its short reason, or why the row could not be judged

    @property
    def status(self) -> str:
        if self.need_gen:
            return "queued"
        return self.verdict or "pending"


class Made(NamedTuple):
    """A picture synth made, as its journal entry says."""

    mode: str
    seed: int | None
    quality: dict | None

    @classmethod
    def from_journal(cls, entry: tuple[int, str, int | None, str | None]) -> "Made":
        """From `Journal.made`'s (result id, mode, seed, quality JSON)."""
        _, mode, seed, quality = entry
        return cls(mode, seed, json.loads(quality) if quality else None)


def row_view(book, row: int, made: Callable[[str], Made | None], policy: PathPolicy,
             instruction: str) -> RowView | None:
    """The row as the page shows it; None when it has nothing to look at and nothing coming."""
    images = {k: cell_text(book.get(row, k)) for k in IMAGE_KEYS}
    images = {k: v for k, v in images.items() if v}
    need_gen = is_true(book.get(row, NEED_GEN))
    row_id = book.row_id(row)
    if not (images or need_gen) or row_id is None:
        return None
    key, result, params = _generated(images, made, policy)
    return RowView(
        row=row, row_id=row_id, images=images, prompt=cell_text(book.get(row, PROMPT)),
        instruction=cell_text(book.get(row, instruction)), need_gen=need_gen,
        gen_status=cell_text(book.get(row, GEN_STATUS)), verdict=parse_verdict(book.get(row, REVIEW)),
        generated=key,
        mode=result.mode if result else params.get("mode", "none") if params else "none",
        seed=result.seed if result else params.get("seed") if params else _int_or_none(book.get(row, GEN_SEED)),
        quality=result.quality if result else None,
        judge_score=_float_or_none(book.get(row, JUDGE_SCORE)), judge_reason=cell_text(book.get(row, JUDGE_REASON)),
    )


def _generated(images: dict[str, str], made: Callable[[str], Made | None], policy: PathPolicy):
    """Which cell holds a generated picture: the journal knows; a PNG's own metadata is the fallback."""
    keys = {key: cell_key(policy, text) for key, text in images.items()}
    for key, rel in keys.items():
        result = made(rel) if rel is not None else None
        if result is not None:
            return key, result, None
    for key, rel in keys.items():
        if rel is not None and rel.lower().endswith(".png"):
            params = png_params(policy.base / rel)
            if "mode" in params:  # synth writes the row's mode into every picture it makes
                return key, None, params
    return None, None, None


def cell_key(policy: PathPolicy, text: str) -> str | None:
    """A cell's path as the journal names outputs (relative to the base dir), None for a URL and the like."""
    try:
        return policy.key(text)
    except BadPath:
        return None


_PARAMS_CACHE: dict[tuple[str, int], dict] = {}


def png_params(path: Path) -> dict:
    """`read_params` of a PNG, cached by modification time; {} for a missing or unreadable file."""
    try:
        stamp = (str(path), os.stat(path).st_mtime_ns)
    except OSError:
        return {}
    if stamp not in _PARAMS_CACHE:
        try:
            _PARAMS_CACHE[stamp] = read_params(path)
        except (OSError, ValueError, SyntaxError):
            _PARAMS_CACHE[stamp] = {}
    return _PARAMS_CACHE[stamp]


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
