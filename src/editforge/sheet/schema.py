"""The synth workbook's vocabulary, in one place: its columns and the words written in them.

Every module that reads or writes a synth workbook (synth, render, review, dataset export and
import) names columns and verdicts through this module.

Columns a person fills (found by header, see `editforge.sheet.workbook`):
    raw_image                  the sample picture: the training target
    ref_image_1..3             up to three reference pictures: the controls, in slot order
    gen_edit_prompt            the instruction synth generates with
    need_gen                   true: this row is missing a picture
    edit_prompt / instruction  the training instruction (else gen_edit_prompt)
Columns EditForge writes, each created after the last used column the first time it is needed:
    gen_seed, gen_status       synth's seed and outcome per row
    review                     the review verdict (typed words count too, see ACCEPTED_WORDS)
    judge_score, judge_reason  the judge's P(yes) for the row's pair, and its short reason or why it
                               could not judge the row (`editforge.judge.workbook`)
    edit_prompt_source         "judge" where `judge --write-instructions` drafted edit_prompt
    editforge_id               the row's identity: filled once per row, it travels with the row
                               through sorts and inserts (see `Workbook.row_id`)
"""

from __future__ import annotations

import re
from typing import Any

from editforge.models.registry import MAX_INPUT_IMAGES

RAW_IMAGE = "raw_image"
REF_KEYS = tuple(f"ref_image_{slot}" for slot in range(1, MAX_INPUT_IMAGES + 1))  # as many as a model takes
IMAGE_KEYS = (RAW_IMAGE, *REF_KEYS)
PROMPT = "gen_edit_prompt"
NEED_GEN = "need_gen"
STANDARD_KEYS = (*IMAGE_KEYS, PROMPT, NEED_GEN)
# The original script's fixed layout (A, B-D, E, G), used when the header row names no standard column.
POSITIONAL_COLUMNS = {RAW_IMAGE: 1, **{key: 2 + i for i, key in enumerate(REF_KEYS)}, PROMPT: 5, NEED_GEN: 7}
# The training instruction: the first of these columns present (the last is the generation prompt).
INSTRUCTION_COLUMNS = ("edit_prompt", "instruction", PROMPT)

GEN_SEED = "gen_seed"
GEN_STATUS = "gen_status"
REVIEW = "review"
ROW_ID = "editforge_id"
JUDGE_SCORE = "judge_score"
JUDGE_REASON = "judge_reason"
EDIT_PROMPT = INSTRUCTION_COLUMNS[0]
EDIT_PROMPT_SOURCE = "edit_prompt_source"
DRAFTED_BY_JUDGE = "judge"  # the edit_prompt_source of a drafted instruction
# Columns EditForge keeps for itself: never training metadata (dataset extra fields).
BOOKKEEPING = {*STANDARD_KEYS, GEN_SEED, GEN_STATUS, REVIEW, ROW_ID, JUDGE_SCORE, JUDGE_REASON, EDIT_PROMPT_SOURCE}

ACCEPTED, REJECTED = "accepted", "rejected"
# Verdicts as people type them (compared lower-cased); anything else counts as not reviewed.
ACCEPTED_WORDS = {ACCEPTED, "accept", "ok", "good", "yes", "y", "true", "1", "pass", "✓", "✔"}
REJECTED_WORDS = {REJECTED, "reject", "bad", "no", "n", "false", "0", "fail", "failed", "x", "✗", "✘"}

TRUE_TEXTS = {"true", "1", "yes", "y"}


def normalize_header(value: Any) -> str:
    """`" Ref Image 1 "` -> `"ref_image_1"`: how headers are compared."""
    return re.sub(r"[\s\-_]+", "_", str(value).strip().lower()) if value is not None else ""


def cell_text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def is_true(value: Any) -> bool:
    """need_gen: true / 1 / yes / y in any case, an Excel TRUE or the number 1."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value == 1
    text = cell_text(value).lower()
    if text in TRUE_TEXTS:
        return True
    try:
        return float(text) == 1.0  # "1.0" from a CSV written by pandas
    except ValueError:
        return False


def false_like(current: Any) -> Any:
    """FALSE in the cell's own type: Excel boolean, number or text (CSV cells are always text)."""
    if isinstance(current, bool):
        return False
    if isinstance(current, (int, float)):
        return 0
    return "FALSE"


def parse_verdict(value: Any) -> str:
    """A review cell as `accepted`, `rejected` or "" (not reviewed)."""
    text = cell_text(value).lower()
    if text in ACCEPTED_WORDS:
        return ACCEPTED
    if text in REJECTED_WORDS:
        return REJECTED
    return ""
