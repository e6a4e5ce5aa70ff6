"""`load_samples(src)`: any supported dataset, its format found from what is there.

    workbook   .xlsx/.xlsm, or a .csv whose header names raw_image/ref_image_N (the synth layout)
    diffsynth  metadata.csv / metadata.json / metadata.jsonl (image, edit_image, prompt), or a folder with one
    musubi     a .jsonl with image_path / control_path_N / caption, or a folder with one
    hf         a .parquet file, or a folder with .parquet files anywhere below it
    folders    a folder with target/ (or images/ ...) and control_N/ folders, .txt captions beside targets
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Iterator

from editforge.dataset.formats import SOURCE_FORMATS, diffsynth, folders, hf, musubi, workbook
from editforge.dataset.sample import Columns, Dataset, keep_judged_at_least
from editforge.errors import EditForgeError
from editforge.sheet.schema import STANDARD_KEYS, normalize_header
from editforge.sheet.workbook import XLSX_SUFFIXES


def load_samples(src: str | os.PathLike, *, source_format: str | None = None, columns: Columns = Columns(),
                 base_dir: str | os.PathLike | None = None, sheet: str | None = None,
                 only_accepted: bool = False, allow_outside: bool = False, min_judge: float | None = None) -> Dataset:
    """Read a dataset as samples. `base_dir`: where relative paths start (default: the source's folder);
    a path leaving it is a sample's problem unless `allow_outside` (`editforge.paths.PathPolicy`).
    `min_judge`: leave out samples whose `judge_score` (a workbook's) is below it, or missing."""
    dataset = _read(src, source_format, columns, base_dir, sheet, only_accepted, allow_outside)
    if min_judge is not None:
        keep_judged_at_least(dataset, min_judge)
    return dataset


def _read(src, source_format, columns, base_dir, sheet, only_accepted, allow_outside) -> Dataset:
    src = Path(os.path.abspath(src))
    if not src.exists():
        raise EditForgeError(f"dataset not found: {src}")
    fmt, path = _locate(src, source_format)
    if fmt != "workbook" and (sheet is not None or only_accepted):
        raise EditForgeError(f"`sheet` and `only_accepted` apply to a workbook; {src.name} is a {fmt} dataset")
    base = Path(os.path.abspath(base_dir)) if base_dir is not None else None
    if fmt == "workbook":
        return workbook.read(path, columns=columns, base_dir=base, sheet=sheet, only_accepted=only_accepted,
                             allow_outside=allow_outside)
    if fmt == "folders":
        return folders.read(path, columns=columns, allow_outside=allow_outside)
    reader = {"diffsynth": diffsynth.read, "musubi": musubi.read, "hf": hf.read}[fmt]
    return reader(path, columns=columns, base_dir=base, allow_outside=allow_outside)


def _locate(src: Path, wanted: str | None) -> tuple[str, Path]:
    """(format, file or folder to read) for `src`, checking `wanted` if the user named one."""
    if wanted is not None and wanted not in SOURCE_FORMATS:
        raise EditForgeError(f"unknown source format {wanted!r}; use one of {', '.join(SOURCE_FORMATS)}")
    candidates = _folder_candidates(src) if src.is_dir() else iter([(_file_format(src), src)])
    for fmt, path in candidates:
        if fmt is not None and (wanted is None or fmt == wanted):
            return fmt, path
    if wanted == "hf" or (wanted == "folders" and src.is_dir()):
        return wanted, src  # let the reader say what is missing
    what = f"a {wanted} dataset" if wanted else "a dataset EditForge reads"
    raise EditForgeError(f"{src} is not {what}; expected one of: {', '.join(SOURCE_FORMATS)} "
                         "(see `editforge dataset --help`)")


def _folder_candidates(src: Path) -> Iterator[tuple[str | None, Path]]:
    """What a folder may be, most specific first; lazy, so a huge image folder is not walked for parquet."""
    for name in diffsynth.METADATA_NAMES:
        if (src / name).is_file():
            yield _file_format(src / name), src / name
    for path in sorted(src.glob("*.jsonl")):
        if path.name not in diffsynth.METADATA_NAMES:
            yield _file_format(path), path
    if folders.find_folders(src, Columns()) is not None:
        yield "folders", src
    if next(src.rglob("*.parquet"), None) is not None:
        yield "hf", src


def _file_format(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in XLSX_SUFFIXES:
        return "workbook"
    if suffix == ".parquet":
        return "hf"
    if suffix == ".json":
        return "diffsynth"
    if suffix == ".jsonl":
        return "musubi" if "image_path" in _first_record(path) else "diffsynth"
    if suffix == ".csv":
        header = {normalize_header(h) for h in _csv_header(path)}
        if header & set(STANDARD_KEYS):
            return "workbook"
        return "diffsynth" if "image" in header else "workbook"
    return None


def _first_record(path: Path) -> dict:
    # errors="replace": a byte that is not UTF-8 is the reader's to report (with the line), not detection's
    with open(path, encoding="utf-8-sig", errors="replace") as fh:
        for line in fh:
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    return {}
                return record if isinstance(record, dict) else {}
    return {}


def _csv_header(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as fh:
        return next(csv.reader(fh), [])
