"""`import_to_workbook`: any dataset -> a workbook in the synth layout, for review and synth.

Columns: `raw_image` (target), `ref_image_1..3` (controls), `gen_edit_prompt` and `edit_prompt`
(both the instruction: the first is what synth would regenerate with, the second what training
reads), `need_gen` (false: every picture is there), then the extra fields. Every cell is a value: a
caption such as `=HYPERLINK(...)` is stored as text in an .xlsx, never as a formula.

Every path is written relative to the workbook's folder, which is what synth, review and export accept
(synth refuses paths outside its base dir). A sample whose images are all inside that folder keeps
them where they are; the images of any other sample (an HF parquet's, unpacked into the EditForge
cache; a dataset in another folder) are hard-linked, or copied across filesystems, into
`<workbook name>-images/` beside the workbook, laid out and named as an export lays them out.
"""

from __future__ import annotations

import os
from pathlib import Path

from editforge.dataset.layout import ExportPlan, write_plan
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
        raise EditForgeError(f"{out} exists; choose a new name or pass `force=True` to replace it")
    policy = PathPolicy(out.parent)
    images = out.parent / f"{out.stem}-images"
    placed = ExportPlan()
    taken = {normalize_header(h) for h in HEADERS} | BOOKKEEPING
    extras = extra_names(samples, reserved=lambda n: normalize_header(n) in taken)
    rows, skipped = [], []
    for index, sample in enumerate(samples, 1):
        if sample.problems:  # written as absolute paths they would read back as harmless
            skipped.append((sample.key, sample.problems[0]))
            continue
        if len(sample.controls) > len(REF_KEYS):
            skipped.append((sample.key, f"{len(sample.controls)} controls; the workbook has {len(REF_KEYS)} ref slots"))
            continue
        if all(policy.inside(p) for p in sample.images):
            target, controls = policy.cell_value(sample.target), [policy.cell_value(p) for p in sample.controls]
        else:
            target, controls = placed.place_sample(index, sample)
            target, controls = f"{images.name}/{target}", [f"{images.name}/{c}" for c in controls]
        refs = controls + [None] * (len(REF_KEYS) - len(controls))
        rows.append([target, *refs, sample.instruction, False, sample.instruction,
                     *(sample.extra.get(name) for name in extras)])
    if placed.images:
        write_plan(images, placed, link=True)
    create_workbook(out, [*HEADERS, *extras], rows)
    return out, skipped
