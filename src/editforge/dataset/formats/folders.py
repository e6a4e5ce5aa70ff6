"""A folder layout: target images with `.txt` captions beside them, plus same-named control folders.

    dataset/
      target/   000001-cat.png  000001-cat.txt  ...
      control_1/000001-cat.png  ...
      control_2/...

This is what SimpleTuner and ai-toolkit train from, and what `export --format simpletuner|aitoolkit`
writes. The target folder is the first of `target, targets, images, edited, output` (or
`--target-column NAME`); control folders are the sub-folders named `control`, `reference`, `ref`,
`source`, `input` or `conditioning`, optionally numbered (`control_1`, `reference-2`), in number
order (or `--control-columns A,B`). A control is the file with the target's stem and any image
suffix, as ai-toolkit matches them; a folder without one gives that sample one control fewer.
A file that is a symlink out of the folder is a sample's problem, as a path out of it is elsewhere.
"""

from __future__ import annotations

import re
from pathlib import Path

from editforge.dataset.layout import ExportPlan
from editforge.dataset.sample import Columns, Dataset, Sample, one_line
from editforge.files import read_text
from editforge.errors import EditForgeError
from editforge.paths import PathPolicy

TARGET_FOLDERS = ("target", "targets", "images", "edited", "output")
_CONTROL_FOLDER = re.compile(r"^(control|reference|ref|source|input|conditioning)[_-]?(\d*)$", re.IGNORECASE)
READABLE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
CAPTION_SUFFIX = ".txt"


def find_folders(root: Path, columns: Columns) -> tuple[Path, list[Path]] | None:
    """(target folder, control folders) of a folder layout, or None if `root` is not one."""
    if columns.target:
        target = root / columns.target
        if not target.is_dir():
            raise EditForgeError(f"no folder {columns.target!r} in {root}")
    else:
        target = next((root / n for n in TARGET_FOLDERS if (root / n).is_dir()), None)
        if target is None:
            return None
    if columns.controls:
        controls = [root / name for name in columns.controls]
        missing = [c.name for c in controls if not c.is_dir()]
        if missing:
            raise EditForgeError(f"no folder {', '.join(missing)} in {root}")
    else:
        found = [(m, p) for p in root.iterdir() if p.is_dir() and (m := _CONTROL_FOLDER.match(p.name))]
        controls = [p for m, p in sorted(found, key=lambda mp: (int(mp[0].group(2) or 0), mp[1].name))]
    return target, controls


def read(root: Path, *, columns: Columns, allow_outside: bool = False) -> Dataset:
    folders = find_folders(root, columns)
    if folders is None:
        raise EditForgeError(f"{root} has no target folder ({', '.join(TARGET_FOLDERS)}); name it with `columns.target`")
    target_dir, control_dirs = folders
    by_stem = [_images_by_stem(d) for d in control_dirs]
    dataset = Dataset(source=root, format="folders", samples=[])
    policy = PathPolicy(root, allow_outside=allow_outside)
    for image in sorted(p for p in target_dir.iterdir() if p.suffix.lower() in READABLE_SUFFIXES):
        caption = image.with_suffix(CAPTION_SUFFIX)
        problems: list[str] = []
        controls = [found[image.stem] for found in by_stem if image.stem in found]
        for path in (image, *controls):
            policy.sample_path(path.relative_to(root).as_posix(), problems)
        dataset.samples.append(Sample(
            key=image.name,
            target=image,
            controls=tuple(controls),
            instruction=read_text(caption).strip() if caption.is_file() else "",
            problems=tuple(problems),
        ))
    return dataset


def _images_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in READABLE_SUFFIXES:
            found.setdefault(path.stem, path)
    return found


def write_folders(samples: list[Sample], *, same_suffix: bool) -> ExportPlan:
    """`target/NAME.ext` + `target/NAME.txt` + `control_K/NAME.ext`: the layout both trainers read.

    Captions are one line: SimpleTuner's `textfile` strategy reads each line as a separate caption.
    """
    plan = ExportPlan()
    for index, sample in enumerate(samples, 1):
        target, _ = plan.place_sample(index, sample, same_suffix=same_suffix)
        plan.texts[str(Path(target).with_suffix(CAPTION_SUFFIX).as_posix())] = one_line(sample.instruction) + "\n"
    return plan


def control_slots(samples: list[Sample]) -> int:
    return max((len(s.controls) for s in samples), default=0)
