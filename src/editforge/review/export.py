"""The export button: accepted rows only, through the dataset exporter (`editforge.dataset`).

It reads the workbook file, so verdicts still queued in the journal are written first; while a synth
run holds the workbook they cannot be, and the export is refused rather than silently missing them.
The output folder is a folder under the export dir named when the app started (`--export-dir`,
default the base dir): the page names it relative to that, and nothing else (an absolute path, `..`,
a symlink out) is accepted, so whoever reaches the app cannot write anywhere else.
`editforge dataset export WORKBOOK --only-accepted` does the same from a shell.
"""

from __future__ import annotations

import os
from pathlib import Path

from editforge.dataset import EDIT_FAMILIES, EXPORT_FORMATS, Columns, export_dataset, load_samples
from editforge.errors import EditForgeError
from editforge.files import portable_path
from editforge.review.session import ReviewSession
from editforge.sheet.schema import RAW_IMAGE, REF_KEYS

FORMATS = EXPORT_FORMATS
DEFAULT_FAMILY = "qwen-image-edit-2509"  # the exporter's own default
FAMILIES = tuple(sorted(EDIT_FAMILIES, key=lambda name: name != DEFAULT_FAMILY))  # the page preselects the first


def export_accepted(session: ReviewSession, fmt: str, out: str, *,
                    model_family: str = DEFAULT_FAMILY) -> dict:
    """Export the accepted rows into the folder `out` under the session's export dir."""
    out_dir = export_folder(session.export_dir, out)
    if session.waiting_updates() and session.write() is None:
        raise EditForgeError(f"{session.waiting_updates()} review change(s) are not in {session.workbook.name} yet "
                             f"({session.last_write_error or 'a synth run holds it'}); export once it is written")
    data = load_samples(session.workbook, source_format="workbook", columns=_dataset_columns(session),
                        base_dir=session.base, sheet=session.sheet or None, only_accepted=True)
    result = export_dataset(data.samples, fmt, out_dir, model_family=model_family)
    skipped = [f"{key}: {reason}" for key, reason in result.skipped]
    message = f"exported {len(result.exported)} accepted rows to {result.out_dir} ({result.format}, {result.family})"
    if skipped:
        message += f"; {len(skipped)} left out ({skipped[0]}{' …' if len(skipped) > 1 else ''})"
    if session.last_held:
        message += f"; {session.last_held}"
    return {"message": message, "out_dir": str(result.out_dir), "exported": [s.key for s in result.exported],
            "skipped": skipped}


def export_folder(root: Path, out: str) -> Path:
    """`out` as a folder strictly inside `root`, judged with symlinks followed; else an error."""
    text, absolute = portable_path(out)
    if not text:
        raise EditForgeError("name an output folder for the export")
    if absolute or ".." in text.split("/"):
        raise EditForgeError(f"export folder {out!r}: name a folder inside {root} (no absolute path, no ..)")
    folder = root / text
    real_root, real = os.path.realpath(root), os.path.realpath(folder)
    if not real.startswith(real_root.rstrip(os.sep) + os.sep):
        raise EditForgeError(f"export folder {out!r} leaves {root} (a symlink?); name a folder inside it")
    return folder


def _dataset_columns(session: ReviewSession) -> Columns:
    """The review's --columns renames (synth's meaning) as the dataset reader's target/controls."""
    renamed = session.source.columns or {}
    if not renamed:
        return Columns()
    return Columns(target=renamed.get(RAW_IMAGE), controls=tuple(renamed.get(k, k) for k in REF_KEYS))
