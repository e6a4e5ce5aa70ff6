"""`fuse_to_folder`: bake Lightning and user LoRAs into the weights and save a plain diffusers pipeline."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

from editforge.errors import EditForgeError
from editforge.models.info import model_info
from editforge.models.loading import load_pipeline
from editforge.models.options import LoadOptions, with_overrides
from editforge.models.registry import EDITFORGE_META
from editforge.quiet import no_progress_bars


def fuse_to_folder(model: str, out: str | Path, options: LoadOptions | None = None, **overrides) -> Path:
    """Save `model` with its Lightning and other LoRAs (`options`: those of `LoadOptions` that shape the weights)
    fused to `out`; `diffusers.DiffusionPipeline.from_pretrained(out)` loads it. A single-file `transformer` or
    `text_encoder` replaces the model's own, as in `load_pipeline`; a GGUF transformer is decoded to `dtype` first
    (a LoRA cannot be fused into quantized blocks), so the folder holds plain weights.

    The Lightning scheduler is saved as the pipeline's scheduler. The folder is written beside its final
    name and renamed into place, so an interrupted fuse never leaves a half-written pipeline.
    """
    options = with_overrides(LoadOptions, options, overrides)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise EditForgeError(f"`out` {out} exists and is not empty; choose a new folder")
    if not options.lightning and not options.loras:
        raise EditForgeError("nothing to fuse: give `lightning=4` or `lightning=8` and/or `loras` PATH")
    # built on the CPU and saved unquantized (a fused folder is plain bf16/fp32 weights)
    pipe = load_pipeline(model, dataclasses.replace(options, device="cpu", quantize=None, offload=None))
    info = model_info(pipe)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        with no_progress_bars():
            pipe.save_pretrained(staging)
        fused = ([info.lightning_file] if info.lightning_file else []) + list(info.loras)
        meta = {
            "family": info.family.name,
            "max_pixels": info.max_pixels,
            "fused": fused,
            "fused_from": info.model,
            "lightning": info.lightning,
        }
        if info.condition_pixels:
            meta["condition_pixels"] = info.condition_pixels
        if info.files:  # the single files the weights came from, beside `fused_from`
            meta["files"] = dict(info.files)
        (staging / EDITFORGE_META).write_text(json.dumps(meta, indent=2))
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out
