"""The synth workbook as a dataset source (reading it is `editforge.sheet.workbook`'s job).

Target = `raw_image`, controls = `ref_image_1..3` in slot order (empty slots skipped), instruction =
`--instruction-column`, else a column named `edit_prompt` or `instruction`, else `gen_edit_prompt`.
Rows whose `gen_status` says failed/rejected or whose `review` says rejected are left out;
`only_accepted` keeps only rows whose `review` says accepted. A `judge_score` (`editforge judge`) travels
with its sample. Paths are relative to the workbook's
folder (or `base_dir`), as `editforge synth` reads them.
"""

from __future__ import annotations

from pathlib import Path

from editforge.dataset.sample import Columns, Dataset, Sample
from editforge.errors import EditForgeError
from editforge.paths import PathPolicy
from editforge.sheet.journal import RecalledFormulas
from editforge.sheet.schema import (
    BOOKKEEPING, GEN_STATUS, INSTRUCTION_COLUMNS, JUDGE_SCORE, PROMPT, RAW_IMAGE, REF_KEYS, REJECTED_WORDS, REVIEW, ACCEPTED_WORDS,
    cell_text, normalize_header,
)
from editforge.sheet.workbook import Uncomputed, open_workbook


def read(path: Path, *, columns: Columns, base_dir: Path | None = None, sheet: str | None = None,
         only_accepted: bool = False, allow_outside: bool = False) -> Dataset:
    with RecalledFormulas(path) as memory:  # formula values synth remembered (its saves drop Excel's)
        book = open_workbook(path, sheet=sheet, read_only=True, memory=memory)
        return _read(book, path, columns, base_dir, only_accepted, allow_outside)


def _read(book, path: Path, columns: Columns, base_dir: Path | None, only_accepted: bool,
          allow_outside: bool) -> Dataset:
    target = columns.target or RAW_IMAGE
    controls = list(columns.controls or [k for k in REF_KEYS if book.column(k) is not None])
    instruction = columns.instruction or next(
        (name for name in INSTRUCTION_COLUMNS if book.column(name) is not None), PROMPT)
    for name in (target, *controls, instruction):
        if book.column(name) is None:
            raise EditForgeError(f"{path.name} has no column {name!r}; its columns: {', '.join(book.headers.values())}")
    used = {normalize_header(n) for n in (target, *controls, instruction)} | BOOKKEEPING
    extra_headers = [h for h in book.headers.values() if normalize_header(h) not in used]
    policy = PathPolicy(base_dir or book.path.parent, allow_outside=allow_outside)
    dataset = Dataset(source=path, format="workbook", samples=[])
    names = [target, *controls, instruction, GEN_STATUS, REVIEW, JUDGE_SCORE, *extra_headers]
    for row, values in book.records(names):
        text = {name: cell_text(values[name]) for name in names}
        key = f"row {row}"
        if not any(text.values()):
            continue  # blank rows are layout, not data
        status, review = text[GEN_STATUS].lower(), text[REVIEW].lower()
        if status.startswith(("failed", "rejected")) or review in REJECTED_WORDS:
            dataset.skipped.append((key, f"{GEN_STATUS if status else REVIEW} says {text[GEN_STATUS] or text[REVIEW]}"))
            continue
        if only_accepted and review not in ACCEPTED_WORDS:
            dataset.skipped.append((key, "not reviewed as accepted"))
            continue
        if not text[target]:
            dataset.skipped.append((key, f"no {target} (still to generate?)"))
            continue
        problems = [values[n].reason(n) for n in (target, *controls, instruction) if isinstance(values[n], Uncomputed)]
        dataset.samples.append(Sample(
            key=key,
            target=policy.sample_path(values[target].strip() if isinstance(values[target], str) else values[target],
                                      problems),
            controls=tuple(policy.sample_path(values[c].strip() if isinstance(values[c], str) else values[c], problems)
                           for c in controls if text[c]),
            instruction=text[instruction],
            extra={h: text[h] for h in extra_headers if text[h] and not isinstance(values[h], Uncomputed)},
            problems=tuple(dict.fromkeys(problems)),
            judge_score=_score(values[JUDGE_SCORE]),
        ))
    return dataset


def _score(value) -> float | None:
    """A judge_score cell as a number in [0, 1], else None (empty, a failed row, something typed)."""
    if isinstance(value, bool):
        return None
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if 0.0 <= score <= 1.0 else None
