"""`export_dataset(samples, fmt, out_dir)`: samples -> a folder a trainer reads as it is.

Samples a trainer would choke on are left out and listed with the reason (a path problem, a missing
file, an empty instruction, no control, more controls than the model family takes); decoding every
image to find corrupt ones is `check`'s job, run it first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from editforge.dataset.formats import EXPORT_FORMATS, aitoolkit, diffsynth, hf, musubi, simpletuner
from editforge.dataset.layout import write_plan
from editforge.dataset.sample import Sample
from editforge.errors import EditForgeError
from editforge.models.registry import EDIT_FAMILIES, FAMILIES, Family

WRITERS = {
    "diffsynth": diffsynth.write,
    "simpletuner": simpletuner.write,
    "aitoolkit": aitoolkit.write,
    "musubi": musubi.write,
    "hf": hf.write,
}


@dataclass
class ExportResult:
    out_dir: Path
    format: str
    family: str
    exported: list[Sample]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (sample key, reason)


def edit_family(name: str) -> Family:
    if name not in EDIT_FAMILIES:
        raise EditForgeError(f"unknown model family {name!r}; use one of {', '.join(EDIT_FAMILIES)}")
    return FAMILIES[name]


def export_dataset(samples: list[Sample], fmt: str, out_dir: str | os.PathLike, *,
                   model_family: str = "qwen-image-edit-2509", link: bool = False) -> ExportResult:
    """Write `samples` in trainer layout `fmt` into `out_dir`; safe to repeat into the same folder."""
    if fmt not in WRITERS:
        raise EditForgeError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    if link and fmt == "hf":
        raise EditForgeError("`link` does not apply to `format=hf`: the images are stored inside the parquet file")
    family = edit_family(model_family)
    out = Path(os.path.abspath(out_dir))
    usable, skipped = [], []
    for sample in samples:
        reason = unusable_reason(sample, family)
        if reason:
            skipped.append((sample.key, reason))
        else:
            usable.append(sample)
    plan = WRITERS[fmt](usable, out, family)
    skipped += plan.skipped
    left_out = {key for key, _ in plan.skipped}
    exported = [s for s in usable if s.key not in left_out]
    if not exported:
        reasons = "; ".join(f"{k}: {r}" for k, r in skipped[:3])
        raise EditForgeError(f"no sample can be exported ({len(samples)} given{': ' + reasons if reasons else ''})")
    write_plan(out, plan, link=link)
    return ExportResult(out_dir=out, format=fmt, family=family.name, exported=exported, skipped=skipped)


def unusable_reason(sample: Sample, family: Family) -> str | None:
    if sample.problems:
        return sample.problems[0]
    missing = next((p for p in sample.images if not p.is_file()), None)
    if missing is not None:
        return f"file not found: {missing}"
    if not sample.instruction.strip():
        return "empty instruction"
    if not sample.controls:
        return "no control image"
    if len(sample.controls) > family.max_images:
        return f"{len(sample.controls)} control images; {family.name} takes at most {family.max_images}"
    return None
