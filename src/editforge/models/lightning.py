"""Qwen-Image-Lightning: the distilled 4/8-step LoRAs from lightx2v, with the scheduler they need.

Each family has its own Lightning files; the LoRAs share one key layout, so a file made for another
family loads silently and gives worse pictures (seed 001 pairs the 2509 LoRA with the v1 base). The
family is read off the file name, and a mismatch is refused unless forced.
"""

from __future__ import annotations

import math
from pathlib import Path

from editforge.errors import EditForgeError
from editforge.models.registry import FAMILIES, LIGHTNING_REPO, QWEN_IMAGE_SCHEDULER, Family

STEPS = (4, 8)
CFG = 1.0

# The distillation scheduler from Qwen-Image-Lightning's reference script: shift 3 (= ln 3 in both
# exponential-shift bounds), no terminal shift. The LoRA was distilled on these sigmas; the checkpoint's
# own scheduler would put its 4 or 8 steps elsewhere.
SCHEDULER_CONFIG = {**QWEN_IMAGE_SCHEDULER, "base_shift": math.log(3), "max_shift": math.log(3), "shift_terminal": None}


def scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)


def family_of_file(path: str | Path) -> Family | None:
    """Which family a Lightning file is for, judged by its name; None when the name does not say."""
    name = Path(path).name.lower()
    if "lightning" not in name:
        return None
    if "2509" in name:
        return FAMILIES["qwen-image-edit-2509"]
    if "edit" in name:
        return FAMILIES["qwen-image-edit"]
    return FAMILIES["qwen-image"]


def resolve_file(family: Family, steps: int, *, path: str | Path | None, local_dir: Path | None, force: bool) -> Path:
    """The Lightning file to load: `path` if given (checked against the family), else the family's own."""
    if steps not in STEPS:
        raise EditForgeError(f"--lightning must be one of {', '.join(map(str, STEPS))} or off, not {steps}")
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise EditForgeError(f"--lightning-path {path}: file not found")
        meant_for = family_of_file(path)
        if meant_for is not None and meant_for is not family and not force:
            raise EditForgeError(
                f"{path.name} is the Lightning LoRA for {meant_for.name}, but the model is {family.name}; "
                f"use {family.lightning_files[steps]} (or --force if you really mean it)"
            )
        return path
    filename = family.lightning_files[steps]
    if local_dir is not None and (local_dir / filename).is_file():
        return local_dir / filename
    from editforge.models.hub import hub_file

    return hub_file(LIGHTNING_REPO, filename, what=f"Lightning LoRA {LIGHTNING_REPO}/{filename}",
                    instead=f"download it where there is internet (`hf download {LIGHTNING_REPO} {filename}`) "
                            "or pass --lightning-path FILE")
