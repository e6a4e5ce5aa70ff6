"""`editforge edit | t2i | fuse | doctor`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from editforge.cli import app
from editforge.cli.options import (
    Cfg, Compile, ConditionPixels, Device, Dtype, Force, Lightning, LightningPath, Loras, MaxPixels, Model,
    NegativePrompt, Offload, Quantize, Seed, Steps, StrictLora, VaeTiling, load_options,
)
from editforge.errors import EditForgeError

console = Console(stderr=True)


def _warnings_to_console() -> None:
    def show(message, category, *args, **kwargs):
        console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, emoji=False)

    warnings.showwarning = show


@app.command()
def edit(
    image: Annotated[Optional[list[Path]], typer.Option("--image", "-i", help="input image, repeatable (Edit-2509: 1-3)")] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="the edit instruction")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output PNG (single edit)")] = None,
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="batch: a prompt per line")] = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="batch: input images per line, space-separated")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", help="batch: output folder")] = None,
    model: Model = "qwen-image-edit-2509",
    lightning: Lightning = "off",
    lightning_path: LightningPath = None,
    lora: Loras = None,
    dtype: Dtype = None,
    quantize: Quantize = "none",
    offload: Offload = "none",
    vae_tiling: VaeTiling = False,
    device: Device = None,
    force: Force = False,
    strict_lora: StrictLora = False,
    compile: Compile = False,
    seed: Seed = 0,
    steps: Steps = None,
    cfg: Cfg = None,
    negative_prompt: NegativePrompt = None,
    max_pixels: MaxPixels = None,
    condition_pixels: ConditionPixels = None,
) -> None:
    """Edit images with Qwen-Image-Edit: one edit (--image/--prompt/--out) or a batch (--prompts/--images/--out-dir)."""
    from editforge.inference.batch import BatchJob, read_jobs
    from editforge.inference.run import run_jobs

    _warnings_to_console()
    if prompts is not None:
        if image or prompt or out:
            raise EditForgeError("use either --image/--prompt/--out or --prompts/--images/--out-dir, not both")
        if out_dir is None:
            raise EditForgeError("batch mode needs --out-dir")
        if images is None:
            raise EditForgeError("editing needs input images: add --images FILE (or use `editforge t2i`)")
        jobs = read_jobs(prompts, images)
    else:
        if not image or not prompt or not out:
            raise EditForgeError("give --image, --prompt and --out (or --prompts, --images and --out-dir for a batch)")
        jobs = [BatchJob(0, prompt, tuple(image))]
    opts = load_options(locals())
    written = run_jobs(
        model, opts, jobs, out=out, out_dir=out_dir, seed=seed,
        gen=dict(steps=steps, cfg=cfg, negative_prompt=negative_prompt, max_pixels=max_pixels,
                 condition_pixels=condition_pixels),
    )
    for path in written:
        typer.echo(path)


@app.command()
def t2i(
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="what to draw")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output PNG")] = None,
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="batch: a prompt per line")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", help="batch: output folder")] = None,
    aspect: Annotated[str, typer.Option("--aspect", help="1:1, 16:9, 9:16, 4:3, 3:4, 3:2 or 2:3")] = "1:1",
    magic: Annotated[str, typer.Option("--magic", help="append the model card's positive magic: en, zh or none")] = "none",
    model: Model = "qwen-image",
    lightning: Lightning = "off",
    lightning_path: LightningPath = None,
    lora: Loras = None,
    dtype: Dtype = None,
    quantize: Quantize = "none",
    offload: Offload = "none",
    vae_tiling: VaeTiling = False,
    device: Device = None,
    force: Force = False,
    strict_lora: StrictLora = False,
    compile: Compile = False,
    seed: Seed = 0,
    steps: Steps = None,
    cfg: Cfg = None,
    negative_prompt: NegativePrompt = None,
    max_pixels: MaxPixels = None,
) -> None:
    """Text-to-image with Qwen-Image at its native aspect ratios."""
    from editforge.inference.batch import BatchJob, read_jobs
    from editforge.inference.run import run_jobs
    from editforge.inference.sizes import ASPECT_RATIOS

    _warnings_to_console()
    if aspect not in ASPECT_RATIOS:
        raise EditForgeError(f"--aspect must be one of {', '.join(ASPECT_RATIOS)}, not {aspect}")
    if magic not in ("none", "en", "zh"):
        raise EditForgeError(f"--magic must be en, zh or none, not {magic}")
    if prompts is not None:
        if out_dir is None:
            raise EditForgeError("batch mode needs --out-dir")
        jobs = read_jobs(prompts)
    elif prompt and out:
        jobs = [BatchJob(0, prompt, ())]
    else:
        raise EditForgeError("give --prompt and --out (or --prompts and --out-dir for a batch)")
    opts = load_options(locals())
    written = run_jobs(
        model, opts, jobs, out=out, out_dir=out_dir, seed=seed,
        gen=dict(steps=steps, cfg=cfg, negative_prompt=negative_prompt, max_pixels=max_pixels),
        aspect=aspect, magic=None if magic == "none" else magic,
    )
    for path in written:
        typer.echo(path)


@app.command()
def fuse(
    out: Annotated[Path, typer.Option("--out", "-o", help="new folder for the merged pipeline")],
    model: Model = "qwen-image-edit-2509",
    lightning: Lightning = "off",
    lightning_path: LightningPath = None,
    lora: Loras = None,
    dtype: Dtype = None,
    force: Force = False,
    strict_lora: StrictLora = False,
) -> None:
    """Fuse Lightning and LoRAs into the weights and save a pipeline plain diffusers can load."""
    from editforge.cli.options import parse_lightning
    from editforge.models.fuse import fuse_to_folder

    path = fuse_to_folder(model, out, lightning=parse_lightning(lightning), lightning_path=lightning_path,
                          loras=lora or (), dtype=dtype, force=force, strict_lora=strict_lora)
    typer.echo(f"saved {path}")


@app.command()
def doctor() -> None:
    """Versions, devices, free memory and which models are cached locally."""
    from editforge.doctor import report

    report(Console())
