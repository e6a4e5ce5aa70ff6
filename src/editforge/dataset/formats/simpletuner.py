"""SimpleTuner: a target dataset, one conditioning dataset per control slot, `multidatabackend.json`.

Rules, from SimpleTuner `documentation/quickstart/QWEN_EDIT.md` and `documentation/DATALOADER.md`:
- the image dataset uses `caption_strategy: "textfile"` (`image.png` beside `image.txt`, each line
  a separate caption) and lists its control datasets in `conditioning_data`;
- each control dataset has `dataset_type: "conditioning"`, `conditioning_type: "reference_strict"`
  and holds files with *exactly* the target's file names: `MultiAspectSampler.get_conditioning_sample`
  swaps the folder and keeps the name, extension included;
- every conditioning dataset must hold a file for every target ("Control tensor list length does not
  match batch size" otherwise), so all samples of one export have the same number of controls;
- edit-v1 (Qwen-Image-Edit) adds a `conditioning_image_embeds` cache entry; edit-v2 (2509) does not.
Paths are absolute because SimpleTuner resolves them from its own working directory.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from editforge.dataset.formats.folders import control_slots, write_folders
from editforge.dataset.layout import ExportPlan
from editforge.dataset.sample import Sample
from editforge.models.registry import Family

CONFIG = "multidatabackend.json"
TARGET_ID = "editforge-target"
RESOLUTION = 1024


def write(samples: list[Sample], out_dir: Path, family: Family) -> ExportPlan:
    counts = Counter(len(s.controls) for s in samples)
    slots = counts.most_common(1)[0][0] if counts else 0
    kept = [s for s in samples if len(s.controls) == slots]
    plan = write_folders(kept, same_suffix=True)
    plan.skipped += [(s.key, f"{len(s.controls)} controls; SimpleTuner needs the same number in every sample "
                             f"(most have {slots})") for s in samples if len(s.controls) != slots]
    plan.texts[CONFIG] = json.dumps(backends(out_dir, control_slots(kept), family), indent=2) + "\n"
    return plan


def backends(out_dir: Path, slots: int, family: Family) -> list[dict]:
    control_ids = [f"editforge-control-{k}" for k in range(1, slots + 1)]
    target = {
        "id": TARGET_ID,
        "type": "local",
        "instance_data_dir": str(out_dir / "target"),
        "caption_strategy": "textfile",
        "resolution": RESOLUTION,
        "conditioning_data": control_ids,
        "cache_dir_vae": str(out_dir / "cache" / "vae" / "target"),
    }
    entries = [target]
    for k, control_id in enumerate(control_ids, 1):
        entries.append({
            "id": control_id,
            "type": "local",
            "dataset_type": "conditioning",
            "instance_data_dir": str(out_dir / f"control_{k}"),
            "conditioning_type": "reference_strict",
            "source_dataset_id": TARGET_ID,
            "resolution": RESOLUTION,
            "cache_dir_vae": str(out_dir / "cache" / "vae" / f"control_{k}"),
        })
    if family.max_images == 1:  # edit-v1 caches the VL encoder's view of the reference
        target["conditioning_image_embeds"] = "editforge-control-embeds"
        entries.append({
            "id": "editforge-control-embeds",
            "type": "local",
            "dataset_type": "conditioning_image_embeds",
            "cache_dir": str(out_dir / "cache" / "conditioning_image_embeds"),
        })
    entries.append({
        "id": "editforge-text-embeds",
        "type": "local",
        "dataset_type": "text_embeds",
        "default": True,
        "cache_dir": str(out_dir / "cache" / "text"),
    })
    return entries

