"""musubi-tuner (kohya-ss): a metadata JSONL plus the dataset TOML that points at it.

Rules, from musubi-tuner `docs/dataset_config.md` ("Sample for Image Dataset with Control Images",
"Qwen-Image-Edit and Qwen-Image-Edit-2509/2511") and `src/musubi_tuner/dataset/datasources.py`
(`ImageJsonlDatasource`):
- one object a line: `image_path` (the target, the picture to generate), `control_path_0..N` (the
  inputs; a bare `control_path` is read as `control_path_0`) and `caption`;
- paths are opened as written, from the trainer's working directory, so they are absolute;
- a dataset read from a JSONL needs `cache_directory`; `control_resolution = [1024, 1024]` resizes
  controls the way the official pipeline does ("strongly recommend"), `no_resize_control = false`.
Reading, relative paths are taken from the JSONL's folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from editforge.dataset.layout import ExportPlan
from editforge.dataset.sample import Columns, Dataset, Sample, check_columns, extra_names
from editforge.errors import EditForgeError
from editforge.files import read_text
from editforge.models.registry import Family
from editforge.paths import PathPolicy

METADATA = "metadata.jsonl"
CONFIG = "dataset.toml"


def _is_reserved(name: str) -> bool:
    return name in ("image_path", "caption", "control_path") or name.startswith(("control_path_", "image_path_"))


def read(path: Path, *, columns: Columns, base_dir: Path | None = None, allow_outside: bool = False) -> Dataset:
    target = columns.target or "image_path"
    instruction = columns.instruction or "caption"
    policy = PathPolicy(base_dir or path.parent, allow_outside=allow_outside)
    dataset = Dataset(source=path, format="musubi", samples=[])
    present: dict[str, None] = {}
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        key = f"line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EditForgeError(f"{path.name} {key} is not JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise EditForgeError(f"{path.name} {key}: expected an object with image_path, control_path_0, caption")
        present.update(dict.fromkeys(record))
        if not str(record.get(target) or "").strip():
            dataset.skipped.append((key, f"no {target}"))
            continue
        control_keys = list(columns.controls or _control_keys(record))
        problems: list[str] = []
        dataset.samples.append(Sample(
            key=key,
            target=policy.sample_path(_stripped(record[target]), problems),
            controls=tuple(policy.sample_path(_stripped(record[k]), problems) for k in control_keys if record.get(k)),
            instruction=str(record.get(instruction) or "").strip(),
            extra={k: v if isinstance(v, str) else json.dumps(v) for k, v in record.items()
                   if k not in (target, instruction, *control_keys) and not _is_reserved(k) and v not in (None, "")},
            problems=tuple(problems),
        ))
    if present:
        check_columns(path, present, [target, instruction, *(columns.controls or ())])
    return dataset


def _stripped(value):
    return value.strip() if isinstance(value, str) else value  # not text: the path policy refuses it


def _control_keys(record: dict) -> list[str]:
    """`control_path`, then `control_path_0, _1, ...` (or `_0000`) in number order, as musubi does."""
    numbered = [k for k in record if k.startswith("control_path_") and k[len("control_path_"):].isdigit()]
    return (["control_path"] if "control_path" in record else []) + sorted(numbered, key=lambda k: int(k.rsplit("_", 1)[1]))


def write(samples: list[Sample], out_dir: Path, family: Family) -> ExportPlan:
    plan = ExportPlan()
    extras = extra_names(samples, reserved=_is_reserved)
    lines = []
    for index, sample in enumerate(samples, 1):
        target, controls = plan.place_sample(index, sample)
        record = {"image_path": str(out_dir / target)}
        record.update({f"control_path_{i}": str(out_dir / c) for i, c in enumerate(controls)})
        record["caption"] = sample.instruction
        record.update({name: sample.extra[name] for name in extras if name in sample.extra})
        lines.append(json.dumps(record, ensure_ascii=False))
    plan.texts[METADATA] = "".join(line + "\n" for line in lines)
    plan.texts[CONFIG] = dataset_toml(out_dir)
    return plan


def dataset_toml(out_dir: Path) -> str:
    # json.dumps of a str is a valid TOML basic string (same quoting and escapes).
    return (
        "# musubi-tuner dataset config written by `editforge dataset export --format musubi`\n"
        "[general]\n"
        "resolution = [1024, 1024]\n"
        "batch_size = 1\n"
        "enable_bucket = true\n"
        "bucket_no_upscale = false\n"
        "\n"
        "[[datasets]]\n"
        f"image_jsonl_file = {json.dumps(str(out_dir / METADATA))}\n"
        f"cache_directory = {json.dumps(str(out_dir / 'cache'))}\n"
        "num_repeats = 1\n"
        "control_resolution = [1024, 1024]\n"
        "no_resize_control = false\n"
    )
