"""Hugging Face `datasets` parquet: one row per sample, images stored inside the file.

Columns follow UltraEdit (the data set MindSpeed-MM's Qwen-Image-Edit guide trains on):
`edited_image` is the target, `source_image` the control (`source_image_2`, `source_image_3` for
more), `edit_prompt` the instruction; `--target-column/--control-columns/--instruction-column`
map other names. An image cell is the `datasets.Image` struct `{bytes, path}` (bytes win; a path
alone is taken from the parquet's folder), plain bytes, or a path string.

Reading unpacks the images once into a content-addressed cache (`$EDITFORGE_HOME/dataset-images`),
so every other tool works on files. Writing stores the features in the schema metadata under
`huggingface`, which is how `datasets.load_dataset("parquet", ...)` knows the columns are images.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from editforge.dataset.layout import ExportPlan
from editforge.dataset.sample import Columns, Dataset, Sample, check_columns, extra_names
from editforge.errors import EditForgeError
from editforge.models.registry import Family
from editforge.files import atomic_write
from editforge.models.registry import cache_root
from editforge.paths import PathPolicy

TARGET, CONTROL, INSTRUCTION = "edited_image", "source_image", "edit_prompt"
DATA_FILE = "data/train-00000-of-00001.parquet"
ROWS_PER_GROUP = 64  # row groups stay small: a row holds whole images
_MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
          (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


def control_column(slot: int) -> str:
    return CONTROL if slot == 1 else f"{CONTROL}_{slot}"


def parquet_files(src: Path) -> list[Path]:
    files = [src] if src.is_file() else sorted(src.rglob("*.parquet"))
    if not files:
        raise EditForgeError(f"no .parquet files in {src}")
    return files


def read(src: Path, *, columns: Columns, base_dir: Path | None = None, allow_outside: bool = False) -> Dataset:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dataset = Dataset(source=src, format="hf", samples=[])
    for file in parquet_files(src):
        try:
            parquet = pq.ParquetFile(file)
        except (pa.ArrowInvalid, OSError) as exc:
            raise EditForgeError(f"not a readable parquet file: {file} ({exc})") from exc
        schema = parquet.schema_arrow
        names = schema.names
        target = columns.target or TARGET
        controls = list(columns.controls or [control_column(k) for k in range(1, 10) if control_column(k) in names])
        instruction = columns.instruction or INSTRUCTION
        check_columns(file, names, [target, *controls, instruction])
        # Text-like columns travel as extra fields; other image or nested columns (masks) do not.
        extras = [f.name for f in schema if f.name not in (target, *controls, instruction)
                  and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)
                       or pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_boolean(f.type))]
        policy = PathPolicy(base_dir or file.parent, allow_outside=allow_outside)
        row = 0
        for batch in parquet.iter_batches(batch_size=ROWS_PER_GROUP, columns=[target, *controls, instruction, *extras]):
            for record in batch.to_pylist():
                row += 1
                key = f"{file.name} row {row}"
                problems: list[str] = []
                target_path = _image_file(record[target], policy, problems)
                if target_path is None:
                    dataset.skipped.append((key, f"no {target}"))
                    continue
                dataset.samples.append(Sample(
                    key=key,
                    target=target_path,
                    controls=tuple(p for c in controls if (p := _image_file(record[c], policy, problems)) is not None),
                    instruction=str(record[instruction] or "").strip(),
                    extra={e: str(record[e]) for e in extras if record[e] not in (None, "")},
                    problems=tuple(problems),
                ))
    return dataset


def _image_file(cell: Any, policy: PathPolicy, problems: list[str]) -> Path | None:
    """An image cell as a file: embedded bytes unpacked into the cache, a path resolved."""
    if isinstance(cell, dict):
        data, path = cell.get("bytes"), cell.get("path")
    elif isinstance(cell, (bytes, bytearray)):
        data, path = bytes(cell), None
    else:
        data, path = None, cell
    if data:
        return _cached(bytes(data), Path(path).suffix.lower() if path else "")
    if path:
        return policy.sample_path(path, problems)
    return None


def _cached(data: bytes, suffix: str) -> Path:
    suffix = suffix or next((s for magic, s in _MAGIC if data.startswith(magic)), "")
    if not suffix and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        suffix = ".webp"
    folder = cache_root() / "dataset-images"
    path = folder / f"{hashlib.blake2b(data, digest_size=20).hexdigest()}{suffix or '.img'}"
    if not path.is_file():
        atomic_write(path, lambda fh: fh.write(data), durable=False)  # a cache: rebuilt if lost
    return path


def write(samples: list[Sample], out_dir: Path, family: Family) -> ExportPlan:
    plan = ExportPlan()
    plan.writers[DATA_FILE] = lambda path: write_parquet(samples, path)
    return plan


def write_parquet(samples: list[Sample], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    slots = max((len(s.controls) for s in samples), default=0)
    image_columns = [TARGET, *(control_column(k) for k in range(1, slots + 1))]
    extras = extra_names(samples, reserved=lambda n: n in image_columns or n == INSTRUCTION)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [(c, image_type) for c in image_columns] + [(INSTRUCTION, pa.string())] + [(e, pa.string()) for e in extras],
        metadata={"huggingface": json.dumps({"info": {"features": {
            **{c: {"_type": "Image"} for c in image_columns},
            **{n: {"dtype": "string", "_type": "Value"} for n in (INSTRUCTION, *extras)},
        }}})},
    )
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(samples), ROWS_PER_GROUP):
            rows = []
            for index, sample in enumerate(samples[start:start + ROWS_PER_GROUP], start + 1):
                images = list(sample.images) + [None] * (slots - len(sample.controls))
                row: dict[str, Any] = {
                    c: None if p is None else {"bytes": p.read_bytes(), "path": f"{index:06d}-{c}{p.suffix.lower()}"}
                    for c, p in zip(image_columns, images)
                }
                row[INSTRUCTION] = sample.instruction
                row.update({e: sample.extra.get(e) for e in extras})
                rows.append(row)
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
