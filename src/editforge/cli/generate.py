"""`editforge edit | t2i | fuse | doctor`."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from editforge.cli import app
from editforge.cli.options import GENERATION, LOAD, Model, Seed, choices, value
from editforge.errors import EditForgeError
from editforge.inference.options import POSITIVE_MAGIC, GenerationOptions
from editforge.inference.sizes import ASPECT_RATIOS
from editforge.models.options import LoadOptions

console = Console(stderr=True)


def _warnings_to_console() -> None:
    def show(message, category, *args, **kwargs):
        console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, emoji=False)

    warnings.showwarning = show


@app.command()
@LOAD.expand("load")
@GENERATION.expand("generation")
def edit(
    image: Annotated[Optional[list[Path]], typer.Option("--image", "-i", help="input image, repeatable (EditPlus: 1-3)")] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="the edit instruction")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output PNG (single edit)")] = None,
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="batch: a prompt per line")] = None,
    images: Annotated[Optional[Path], typer.Option("--images", help="batch: input images per line, space-separated")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", help="batch: output folder")] = None,
    model: Model = "qwen-image-edit-2509",
    seed: Seed = 0,
    load: LoadOptions = None,
    generation: GenerationOptions = None,
) -> None:
    """Edit images with Qwen-Image-Edit: one edit (--image/--prompt/--out) or a batch (--prompts/--images/--out-dir)."""
    from editforge.inference.batch import BatchJob, read_jobs

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
    _run(model, load, jobs, out=out, out_dir=out_dir, seed=seed, generation=generation)


Aspect = choices("Aspect", ASPECT_RATIOS)
Magic = choices("Magic", ("none", *POSITIVE_MAGIC))


@app.command()
@LOAD.expand("load")
@GENERATION.expand("generation", only=("steps", "cfg", "negative_prompt", "max_pixels"))
def t2i(
    prompt: Annotated[Optional[str], typer.Option("--prompt", "-p", help="what to draw")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="output PNG")] = None,
    prompts: Annotated[Optional[Path], typer.Option("--prompts", help="batch: a prompt per line")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out-dir", help="batch: output folder")] = None,
    aspect: Annotated[Aspect, typer.Option("--aspect", help="Qwen-Image's table of sizes")] = "1:1",
    magic: Annotated[Magic, typer.Option("--magic", help="append the model card's positive magic")] = "none",
    model: Model = "qwen-image",
    seed: Seed = 0,
    load: LoadOptions = None,
    generation: GenerationOptions = None,
) -> None:
    """Text-to-image with Qwen-Image at its native aspect ratios."""
    from editforge.inference.batch import BatchJob, read_jobs

    if prompts is not None:
        if out_dir is None:
            raise EditForgeError("batch mode needs --out-dir")
        jobs = read_jobs(prompts)
    elif prompt and out:
        jobs = [BatchJob(0, prompt, ())]
    else:
        raise EditForgeError("give --prompt and --out (or --prompts and --out-dir for a batch)")
    _run(model, load, jobs, out=out, out_dir=out_dir, seed=seed, generation=generation,
         aspect=value(aspect), magic=None if value(magic) == "none" else value(magic))


def _run(model: str, load: LoadOptions, jobs, **job_options) -> None:
    from editforge.cli.progress import RichProgress
    from editforge.inference.run import run_jobs

    _warnings_to_console()
    with RichProgress(console) as progress:
        written = run_jobs(model, load, jobs, progress=progress, **job_options)
    for path in written:
        typer.echo(path)


@app.command()
@LOAD.expand("load", only=("lightning", "lightning_path", "loras", "dtype", "transformer", "text_encoder", "vae", "force",
                            "strict_lora"))
def fuse(
    out: Annotated[Path, typer.Option("--out", "-o", help="new folder for the merged pipeline")],
    model: Model = "qwen-image-edit-2509",
    load: LoadOptions = None,
) -> None:
    """Fuse Lightning and LoRAs into the weights (of the model's transformer, or of a single file: ComfyUI, fp8,
    GGUF) and save a pipeline plain diffusers can load."""
    from editforge.models.fuse import fuse_to_folder

    typer.echo(f"saved {fuse_to_folder(model, out, load)}")


@app.command()
def doctor() -> None:
    """Versions, devices, free memory and which models are cached locally."""
    from editforge.doctor import report

    report(Console())
