"""Checkpoints: everything needed to continue a run as if it had never stopped.

A checkpoint folder `checkpoints/step-000200/` holds the LoRA weights (unscaled, bit-exact), the optimizer,
the LR scheduler and every process's RNG states (accelerate's `save_state`, which also handles DeepSpeed's
sharded optimizer), plus `trainer_state.json`: the step and the data position. It is written under a
temporary name and renamed at the end, so a crash or a full disk while saving leaves the previous
checkpoint as the latest complete one, and `--resume latest` never picks up half a checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from editforge.errors import EditForgeError
from editforge.train.lora import load_trainable_state, trainable_state

STEP_DIR = re.compile(r"^step-(\d{6,})$")
LORA_FILE = "lora_state.safetensors"
STATE_FILE = "trainer_state.json"


def register_lora_hooks(accelerator, transformer) -> None:
    """Make accelerate save and load only the LoRA, not the 40 GB frozen transformer."""

    def save(models, weights, output_dir):
        if accelerator.is_main_process:
            save_file(trainable_state(transformer), os.path.join(output_dir, LORA_FILE))
        weights.clear()

    def load(models, input_dir):
        load_trainable_state(transformer, load_file(os.path.join(input_dir, LORA_FILE)))
        models.clear()

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


def save_checkpoint(accelerator, root: Path, step: int, trainer_state: dict, keep: int) -> Path:
    """Collective: every process calls it. Returns the final folder."""
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    kwargs = {"exclude_frozen_parameters": True} if accelerator.distributed_type == "DEEPSPEED" else {}
    accelerator.save_state(str(tmp), **kwargs)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **trainer_state}, indent=2))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(checkpoints(root))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of an interrupted save are not listed)."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if STEP_DIR.match(p.name)), key=lambda p: p.name)


def resolve_resume(root: Path, resume: str) -> Path:
    """`latest` or a checkpoint folder -> the folder to resume from."""
    if resume == "latest":
        found = checkpoints(root)
        if not found:
            raise EditForgeError(f"`resume=latest`: no checkpoint in {root} yet; start without `resume`")
        return found[-1]
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise EditForgeError(f"`resume` {resume}: not a checkpoint folder (no {STATE_FILE})")
    return path


def load_checkpoint(accelerator, path: Path) -> dict:
    # DeepSpeed's module states hold only the LoRA (saved with exclude_frozen_parameters): load them
    # non-strict, or the frozen base's keys count as missing.
    kwargs = {"load_module_strict": False} if accelerator.distributed_type == "DEEPSPEED" else {}
    accelerator.load_state(str(path), **kwargs)
    return json.loads((path / STATE_FILE).read_text())
