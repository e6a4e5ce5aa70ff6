"""`import_to_workbook`: any dataset -> a workbook in the synth layout, for review and synth.

Columns: `raw_image` (target), `ref_image_1..3` (controls), `gen_edit_prompt` and `edit_prompt`
(both the instruction: the first is what synth would regenerate with, the second what training
reads), `need_gen` (false: every picture is there), then the extra fields. Paths are written
relative to the workbook's folder when the images are inside it, absolute otherwise, so the
workbook reads back the same samples from wherever it is opened. Every cell is a value: a caption
such as `=HYPERLINK(...)` is stored as text in an .xlsx, never as a formula.
"""

from __future__ import annotations

import os
from pathlib import Path

from editforge.dataset.sample import Sample, extra_names
from editforge.errors import EditForgeError
from editforge.paths import PathPolicy
from editforge.sheet.schema import BOOKKEEPING, INSTRUCTION_COLUMNS, NEED_GEN, PROMPT, RAW_IMAGE, REF_KEYS, normalize_header
from editforge.sheet.workbook import create_workbook

INSTRUCTION_COLUMN = INSTRUCTION_COLUMNS[0]
HEADERS = (RAW_IMAGE, *REF_KEYS, PROMPT, NEED_GEN, INSTRUCTION_COLUMN)


def import_to_workbook(samples: list[Sample], out: str | os.PathLike, *, force: bool = False
                       ) -> tuple[Path, list[tuple[str, str]]]:
    """Write `samples` to a new .xlsx/.csv; returns its path and the samples left out, with why."""
    out = Path(os.path.abspath(out))
    if out.exists() and not force:
        raise EditForgeError(f"{out} exists; choose a new name or pass --force to replace it")
    policy = PathPolicy(out.parent)
    taken = {normalize_header(h) for h in HEADERS} | BOOKKEEPING
    extras = extra_names(samples, reserved=lambda n: normalize_header(n) in taken)
    rows, skipped = [], []
    for sample in samples:
        if sample.problems:  # written as absolute paths they would read back as harmless
            skipped.append((sample.key, sample.problems[0]))
            continue
        if len(sample.controls) > len(REF_KEYS):
            skipped.append((sample.key, f"{len(sample.controls)} controls; the workbook has {len(REF_KEYS)} ref slots"))
            continue
        refs = [policy.cell_value(p) for p in sample.controls] + [None] * (len(REF_KEYS) - len(sample.controls))
        rows.append([policy.cell_value(sample.target), *refs, sample.instruction, False, sample.instruction,
                     *(sample.extra.get(name) for name in extras)])
    create_workbook(out, [*HEADERS, *extras], rows)
    return out, skipped
