"""Qwen-Image-Lightning: the distilled 4/8-step LoRAs from lightx2v, with the scheduler they need.

Each family has its own Lightning files; the LoRAs share one key layout, so a file made for another
family loads silently and gives worse pictures (seed 001 pairs the 2509 LoRA with the v1 base). The
family is read off the file name (lightx2v's scheme, e.g. `Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16`), and
a file of another or an unknown family, or of other steps, is refused unless forced.
"""

from __future__ import annotations

import math
from pathlib import Path

from editforge.errors import EditForgeError
from editforge.models.registry import FAMILIES, QWEN_IMAGE_SCHEDULER, Family, parse_lightning_name

CFG = 1.0  # the Lightning LoRAs are distilled for guidance off

# The distillation scheduler from Qwen-Image-Lightning's reference script: shift 3 (= ln 3 in both
# exponential-shift bounds), no terminal shift. The LoRA was distilled on these sigmas; the checkpoint's
# own scheduler would put its 4 or 8 steps elsewhere.
SCHEDULER_CONFIG = {**QWEN_IMAGE_SCHEDULER, "base_shift": math.log(3), "max_shift": math.log(3), "shift_terminal": None}


def scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(SCHEDULER_CONFIG)


def family_of_file(path: str | Path) -> Family | None:
    """The family a Lightning file is for, read off lightx2v's name scheme; None when the name is not a known
    family's (an unknown model such as a newer Edit release, or no Lightning name at all)."""
    parsed = parse_lightning_name(Path(path).name)
    if parsed is None:
        return None
    return next((f for f in FAMILIES.values() if (f.lightning_model or "").lower() == parsed[0].lower()), None)


def check_file(path: Path, family: Family, steps: int) -> None:
    """Refuse a Lightning file whose name says another family, an unknown model or other steps.

    A name without "lightning" in it is a renamed copy and is taken as the user says. Every other name must
    be one of lightx2v's for a known family: a LoRA distilled for another model loads without complaint
    (they share one key layout) and only gives worse pictures.
    """
    name = path.name
    parsed = parse_lightning_name(name)
    own = family.lightning_files[steps]
    if parsed is None:
        if "lightning" in name.lower():
            raise EditForgeError(f"{name} is not a Lightning file name EditForge knows (MODEL-Lightning-Nsteps-"
                                 f"Vx.y[-bf16].safetensors); use {Path(own).name} (or `force=True` if you really mean it)")
        return
    meant_for = family_of_file(path)
    if meant_for is None:
        raise EditForgeError(f"{name} is the Lightning LoRA of {parsed[0]}, a model EditForge does not support, "
                             f"but the model is {family.name}; use {Path(own).name} (or `force=True` if you really mean it)")
    if meant_for is not family:
        raise EditForgeError(f"{name} is the Lightning LoRA for {meant_for.name}, but the model is {family.name}; "
                             f"use {Path(own).name} (or `force=True` if you really mean it)")
    if parsed[1] != steps:
        raise EditForgeError(f"{name} is distilled for {parsed[1]} steps, not `lightning={steps}`; "
                             f"use `lightning={parsed[1]}` (or `force=True` if you really mean it)")


def resolve_file(family: Family, steps: int, *, path: str | Path | None, local_dir: Path | None, force: bool) -> Path:
    """The Lightning file to load: `path` if given (checked against the family), else the family's own."""
    if steps not in family.lightning_files:
        raise EditForgeError(f"`lightning` must be {' or '.join(map(str, sorted(family.lightning_files)))} for "
                             f"{family.name} (or off), not {steps}")
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise EditForgeError(f"`lightning_path` {path}: file not found")
        if not force:
            check_file(path, family, steps)
        return path
    filename = family.lightning_files[steps]
    if local_dir is not None and (local_dir / filename).is_file():
        return local_dir / filename
    from editforge.models.hub import hub_file

    repo = family.lightning_repo
    return hub_file(repo, filename, what=f"Lightning LoRA {repo}/{filename}",
                    instead=f"download it where there is internet (`hf download {repo} {filename}`) "
                            "or pass `lightning_path` FILE")
