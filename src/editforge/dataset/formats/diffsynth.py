"""DiffSynth-Studio's metadata file: `image` (the target), `edit_image` (the control(s)), `prompt`.

Schema, from DiffSynth-Studio `diffsynth/core/data/unified_dataset.py` and the example training
scripts `examples/qwen_image/model_training/lora/Qwen-Image-Edit{,-2509}.sh`:
- `.csv` is read with `pandas.read_csv`, `.json` with `json.load` (a list of objects), `.jsonl` one
  object a line; every key in `--data_file_keys "image,edit_image"` is joined to
  `--dataset_base_path` and opened. A string loads one image, a *list* loads several.
- A list inside a CSV cell reaches the loader as a string and is opened as one file name, so
  Edit-2509 (whose pipeline wants `edit_image` as a list even for one image) needs the JSON form:
  that is why the 2509 example ships `metadata.json` and Edit (v1) ships `metadata.csv`.
- Other columns are ignored by the trainer; extra fields travel in them.
MindSpeed-MM's Qwen-Image-Edit guide calls the same file `metadata_edit.csv` and describes `image` as
the *source*; DiffSynth's training code uses `image` as the picture being learned, which is what
this module follows.
"""

from __future__ import annotations

import ast
import csv
import io
import json
from pathlib import Path
from typing import Any

from editforge.dataset.layout import ExportPlan
from editforge.dataset.sample import Columns, Dataset, Sample, check_columns, extra_names
from editforge.errors import EditForgeError
from editforge.files import read_text
from editforge.paths import PathPolicy
from editforge.models.registry import Family

METADATA_NAMES = ("metadata.csv", "metadata.json", "metadata.jsonl", "metadata_edit.csv")
FIELDS = ("image", "edit_image", "prompt")


def read(path: Path, *, columns: Columns, base_dir: Path | None = None, allow_outside: bool = False) -> Dataset:
    target = columns.target or "image"
    controls = list(columns.controls or ["edit_image"])
    instruction = columns.instruction or "prompt"
    policy = PathPolicy(base_dir or path.parent, allow_outside=allow_outside)
    dataset = Dataset(source=path, format="diffsynth", samples=[])
    used = {target, *controls, instruction}
    present: dict[str, None] = {}
    for key, record in _records(path):
        if not isinstance(record, dict):
            raise EditForgeError(f"{path.name} {key}: expected an object with {', '.join(FIELDS)}")
        present.update(dict.fromkeys(record))
        if not _text(record.get(target)):
            dataset.skipped.append((key, f"no {target}"))
            continue
        problems: list[str] = []
        control_paths = [policy.sample_path(p, problems) for c in controls for p in _paths(record.get(c))]
        target_value = record[target].strip() if isinstance(record[target], str) else record[target]
        dataset.samples.append(Sample(
            key=key,
            target=policy.sample_path(target_value, problems),
            controls=tuple(control_paths),
            instruction=_text(record.get(instruction)),
            extra={k: _text(v) for k, v in record.items() if k not in used and _text(v)},
            problems=tuple(problems),
        ))
    if present:  # controls are optional (a text-to-image set has none) unless named
        check_columns(path, present, [target, instruction, *(columns.controls or ())])
    return dataset


def _records(path: Path):
    text = read_text(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
            if not isinstance(data, list):
                raise EditForgeError(f"{path.name} must hold a JSON list of objects")
            yield from ((f"item {i}", r) for i, r in enumerate(data, 1))
        elif suffix == ".jsonl":
            for number, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    yield f"line {number}", json.loads(line)
        else:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            for record in reader:
                yield f"line {reader.line_num}", record
    except json.JSONDecodeError as exc:
        raise EditForgeError(f"{path.name} is not valid JSON: {exc}") from exc


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):  # NaN from pandas-written files
        return ""
    return value.strip() if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _paths(value: Any) -> list[Any]:
    """`edit_image`: one path, a list, or a list that a CSV turned into text. Items that are not text
    are kept as they are, for the path policy to refuse."""
    if isinstance(value, list):
        return [v.strip() if isinstance(v, str) else v for v in value if not isinstance(v, str) or v.strip()]
    if value is not None and not isinstance(value, str):
        return [] if value != value else [value]  # NaN from pandas-written files: empty
    text = _text(value)
    if text.startswith("["):
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(text)
            except (ValueError, SyntaxError):
                continue
            if isinstance(parsed, list):
                return [v.strip() if isinstance(v, str) else v for v in parsed if not isinstance(v, str) or v.strip()]
    return [text] if text else []


def write(samples: list[Sample], out_dir: Path, family: Family) -> ExportPlan:
    """Edit (v1): `metadata.csv` with one `edit_image` path; Edit-2509: `metadata.json` with a list."""
    multi_image = family.max_images > 1
    plan = ExportPlan()
    extras = extra_names(samples, reserved=lambda name: name in FIELDS)
    rows = []
    for index, sample in enumerate(samples, 1):
        target, controls = plan.place_sample(index, sample)
        row = {"image": target, "edit_image": controls if multi_image else controls[0], "prompt": sample.instruction}
        row.update({name: sample.extra.get(name, "") for name in extras})
        rows.append(row)
    if multi_image:
        plan.texts["metadata.json"] = json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
    else:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=[*FIELDS, *extras], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        plan.texts["metadata.csv"] = text.getvalue()
    return plan

