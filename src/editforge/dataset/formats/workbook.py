"""The synth workbook as a dataset source (reading it is `editforge.sheet.workbook`'s job).

Target = `raw_image`, controls = `ref_image_1..3` in slot order (empty slots skipped), instruction =
`--instruction-column`, else a column named `edit_prompt` or `instruction`, else `gen_edit_prompt`.
Rows whose `gen_status` says failed/rejected or whose `review` says rejected are left out;
`only_accepted` keeps only rows whose `review` says accepted. Paths are relative to the workbook's
folder (or `base_dir`), as `editforge synth` reads them.
"""

from __future__ import annotations

from pathlib import Path

from editforge.dataset.sample import Columns, Dataset, PathResolver, Sample
from editforge.errors import EditForgeError
from editforge.sheet.render import GEN_SEED, GEN_STATUS
from editforge.sheet.workbook import REF_KEYS, STANDARD_KEYS, normalize_header, open_workbook
from editforge.sheet.plan import cell_text

REVIEW = "review"
INSTRUCTION_COLUMNS = ("edit_prompt", "instruction", "gen_edit_prompt")
# Review verdicts as people type them (compared lower-cased); anything else counts as not reviewed.
ACCEPTED = {"accepted", "accept", "ok", "good", "yes", "y", "true", "1", "pass", "✓", "✔"}
REJECTED = {"rejected", "reject", "bad", "no", "n", "false", "0", "fail", "failed", "x", "✗", "✘"}
# Columns the synth loop keeps for itself: never training metadata.
BOOKKEEPING = {*STANDARD_KEYS, GEN_STATUS, GEN_SEED, REVIEW}


def read(path: Path, *, columns: Columns, base_dir: Path | None = None, sheet: str | None = None,
         only_accepted: bool = False) -> Dataset:
    book = open_workbook(path, sheet=sheet, read_only=True)
    target = columns.target or "raw_image"
    controls = list(columns.controls or [k for k in REF_KEYS if book.column(k) is not None])
    instruction = columns.instruction or next(
        (name for name in INSTRUCTION_COLUMNS if book.column(name) is not None), "gen_edit_prompt")
    for name in (target, *controls, instruction):
        if book.column(name) is None:
            raise EditForgeError(f"{path.name} has no column {name!r}; its columns: {', '.join(book.headers.values())}")
    used = {normalize_header(n) for n in (target, *controls, instruction)} | BOOKKEEPING
    extra_headers = [h for h in book.headers.values() if normalize_header(h) not in used]
    resolver = PathResolver(base_dir or path.parent)
    dataset = Dataset(source=path, format="workbook", samples=[])
    names = [target, *controls, instruction, GEN_STATUS, REVIEW, *extra_headers]
    for row, values in book.records(names):
        text = {name: cell_text(values[name]) for name in names}
        key = f"row {row}"
        if not any(text.values()):
            continue  # blank rows are layout, not data
        status, review = text[GEN_STATUS].lower(), text[REVIEW].lower()
        if status.startswith(("failed", "rejected")) or review in REJECTED:
            dataset.skipped.append((key, f"{GEN_STATUS if status else REVIEW} says {text[GEN_STATUS] or text[REVIEW]}"))
            continue
        if only_accepted and review not in ACCEPTED:
            dataset.skipped.append((key, "not reviewed as accepted"))
            continue
        if not text[target]:
            dataset.skipped.append((key, f"no {target} (still to generate?)"))
            continue
        problems: list[str] = []
        dataset.samples.append(Sample(
            key=key,
            target=resolver.resolve(text[target], problems),
            controls=tuple(resolver.resolve(text[c], problems) for c in controls if text[c]),
            instruction=text[instruction],
            extra={h: text[h] for h in extra_headers if text[h]},
            problems=tuple(problems),
        ))
    return dataset
