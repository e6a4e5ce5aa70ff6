"""`editforge train CONFIG.yaml [--set key=value ...] [--resume latest]` and `editforge train --print-config`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from editforge.cli import app
from editforge.cli.options import FamilyName, choices, value
from editforge.errors import EditForgeError

LoraFormat = choices("LoraFormat", ("diffusers", "comfyui"))


@app.command("train")
def train_command(
    config: Annotated[Optional[Path], typer.Argument(help="the run's YAML config (see --print-config)")] = None,
    overrides: Annotated[Optional[list[str]], typer.Option("--set", help="override a key: train.steps=500, repeatable")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", help="'latest' or a checkpoint folder")] = None,
    export_format: Annotated[Optional[LoraFormat], typer.Option("--export-format", help="comfyui also writes lora-comfyui.safetensors")] = None,
    print_config: Annotated[bool, typer.Option("--print-config", help="print a complete default config and exit")] = False,
    family: Annotated[FamilyName, typer.Option("--family", help="with --print-config: the model family")] = "qwen-image-edit-2509",
) -> None:
    """Train a LoRA on a dataset: cache latents and text embeddings, then optimise; works under `accelerate launch`."""
    import yaml

    from editforge.cli.progress import RichProgress
    from editforge.train import default_config, load_config, train

    if print_config:
        typer.echo(yaml.safe_dump(default_config(value(family)), sort_keys=False), nl=False)
        return
    if config is None:
        raise EditForgeError("give a config file (start from `editforge train --print-config > run.yaml`)")
    overrides = list(overrides or [])
    if export_format:
        overrides.append(f"export_format={value(export_format)}")
    cfg = load_config(config, overrides)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    with RichProgress() as progress:
        result = train(cfg, resume=resume, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0:  # under accelerate launch, one line, not one per process
        typer.echo(f"saved {result.lora}")
