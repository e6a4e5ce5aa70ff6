"""`fuse_to_folder`: bake Lightning and user LoRAs into the weights and save a plain diffusers pipeline."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from editforge.errors import EditForgeError
from editforge.models.loading import load_pipeline
from editforge.models.registry import EDITFORGE_META
from editforge.quiet import no_progress_bars


def fuse_to_folder(model: str, out: str | Path, *, lightning=None, lightning_path=None, loras=(), dtype=None,
                   force: bool = False, strict_lora: bool = False) -> Path:
    """Save `model` with its LoRAs fused to `out`; `diffusers.DiffusionPipeline.from_pretrained(out)` loads it.

    The Lightning scheduler is saved as the pipeline's scheduler. The folder is written beside its final
    name and renamed into place, so an interrupted fuse never leaves a half-written pipeline.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise EditForgeError(f"--out {out} exists and is not empty; choose a new folder")
    if not lightning and not loras:
        raise EditForgeError("nothing to fuse: give --lightning 4|8 and/or --lora PATH")
    pipe = load_pipeline(model, lightning=lightning, lightning_path=lightning_path, loras=loras, dtype=dtype,
                         device="cpu", force=force, strict_lora=strict_lora)
    info = pipe.editforge_info
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with no_progress_bars():
            pipe.save_pretrained(staging)
        fused = ([info["lightning_file"]] if info["lightning_file"] else []) + info["loras"]
        meta = {
            "family": info["family"],
            "max_pixels": info["max_pixels"],
            "fused": fused,
            "fused_from": info["model"],
            "lightning": info["lightning"],
        }
        if info["condition_pixels"]:
            meta["condition_pixels"] = info["condition_pixels"]
        (staging / EDITFORGE_META).write_text(json.dumps(meta, indent=2))
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
