"""`editforge synth`: fill the missing pictures of an annotation workbook (see docs/synth.md)."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from editforge.cli import app
from editforge.cli.generate import _warnings_to_console
from editforge.cli.options import (
    Cfg, Compile, ConditionPixels, Device, Dtype, Force, Lightning, LightningPath, Loras, MaxPixels, Model,
    NegativePrompt, Offload, Quantize, Steps, StrictLora, VaeTiling, load_options,
)
from editforge.errors import EditForgeError

# Test seam: "module:function" naming a zero-argument factory that returns a generator
# `(images, prompt, seed) -> (image, params)`, used instead of loading a model. The crash and
# multi-process tests start real `editforge synth` processes with a fake generator through it.
GENERATOR_ENV = "EDITFORGE_SYNTH_GENERATOR"

console = Console(stderr=True)


@app.command()
def synth(
    workbook: Annotated[Path, typer.Argument(help="the annotation workbook (.xlsx, .xlsm or .csv)")],
    sheet: Annotated[Optional[str], typer.Option("--sheet", help="sheet name (default: the active sheet)")] = None,
    base_dir: Annotated[Optional[Path], typer.Option("--base-dir", help="folder the image paths are relative to (default: the workbook's)")] = None,
    columns: Annotated[Optional[str], typer.Option("--columns", help="header names that differ, e.g. gen_edit_prompt=Prompt,need_gen=Todo")] = None,
    model: Model = "qwen-image-edit-2509",
    lightning: Lightning = "8",
    lightning_path: LightningPath = None,
    lora: Loras = None,
    dtype: Dtype = None,
    quantize: Quantize = "none",
    offload: Offload = "none",
    vae_tiling: VaeTiling = False,
    device: Device = None,
    force: Force = False,
    strict_lora: StrictLora = False,
    compile: Compile = None,
    max_pixels: MaxPixels = None,
    condition_pixels: ConditionPixels = None,
    steps: Steps = None,
    cfg: Cfg = None,
    negative_prompt: NegativePrompt = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="base seed; each row's seed derives from it and the row (default: random, printed, remembered in the journal)")] = None,
    max_rows: Annotated[Optional[int], typer.Option("--max-rows", min=0, help="generate at most this many rows")] = None,
    retries: Annotated[int, typer.Option("--retries", min=0, help="new seeds to try when an output fails the quality gate")] = 2,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, write nothing, load no model")] = False,
    allow_outside: Annotated[bool, typer.Option("--allow-outside", help="accept image paths outside the base dir")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="try rows that failed in an earlier run again, although their inputs did not change")] = False,
    out_raw: Annotated[str, typer.Option("--out-raw", help="folder for generated samples, relative to the base dir")] = "generated/raw",
    out_ref: Annotated[str, typer.Option("--out-ref", help="folder for generated references, relative to the base dir")] = "generated/ref",
    save_every: Annotated[int, typer.Option("--save-every", min=1, help="write the workbook every N rows ...")] = 100,
    save_interval: Annotated[float, typer.Option("--save-interval", min=0, help="... or every T seconds")] = 60.0,
) -> None:
    """Generate the missing pictures of every need_gen row, crash-safe, on one GPU or many."""
    from editforge.sheet.synth import SynthOptions, check_workbook, dry_run as plan_text, synth as run_synth

    options = SynthOptions(
        sheet=sheet, base_dir=base_dir, columns=parse_columns(columns), out_raw=out_raw, out_ref=out_ref,
        seed=seed, max_rows=max_rows, retries=retries, allow_outside=allow_outside, retry_failed=retry_failed,
        save_every_rows=save_every, save_every_seconds=save_interval,
    )
    if dry_run:
        typer.echo(plan_text(workbook, options))
        return
    _warnings_to_console()
    check_workbook(workbook, options)  # a bad workbook is found before a model is looked for
    team, process_device = accelerate_team()
    load = load_options(locals())
    load["device"] = device or process_device
    gen = dict(steps=steps, cfg=cfg, negative_prompt=negative_prompt, max_pixels=max_pixels,
               condition_pixels=condition_pixels)
    make_generator, options.max_inputs = model_generator(model, load, gen)
    summary = run_synth(workbook, make_generator, options, team=team, console=console)
    if team.is_main:
        for row, reason in summary.failures[:20]:
            console.print(f"[red]failed[/] row {row}: {escape(reason)}", highlight=False, emoji=False)
        if len(summary.failures) > 20:
            console.print(f"... and {len(summary.failures) - 20} more failures (see gen_status)")
        for note in summary.notes:
            console.print(f"[yellow]note[/] {note}", highlight=False)
        typer.echo(summary.line())
    raise typer.Exit(summary.exit_code)


def parse_columns(text: str | None) -> dict[str, str]:
    """`gen_edit_prompt=Prompt,need_gen=Todo` -> {"gen_edit_prompt": "Prompt", "need_gen": "Todo"}."""
    mapping = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, header = part.partition("=")
        if not sep or not key.strip() or not header.strip():
            raise EditForgeError(f"--columns wants key=Header pairs separated by commas, got {part!r}")
        mapping[key.strip()] = header.strip()
    return mapping


def model_generator(model: str, load: dict, gen: dict):
    """`(make_generator, max_inputs)`: every option checked and every file found now, before the workbook
    is touched; `make_generator()` loads the pipeline (only if this process has rows to do) and returns
    `(images, prompt, seed) -> (image, params)`. `max_inputs`: how many input images the model takes."""
    seam = os.environ.get(GENERATOR_ENV)
    if seam:
        module, _, name = seam.partition(":")
        return getattr(importlib.import_module(module), name), None
    from editforge.inference.generate import check_load_request
    from editforge.inference.generator import PipelineGenerator
    from editforge.models.loading import build_pipeline, prepare_load

    plan = prepare_load(model, **load)
    if not plan.family.is_edit:
        raise EditForgeError(f"--model {model} is text-to-image ({plan.family.name}); synth needs an edit model "
                             "such as qwen-image-edit-2509")
    check_load_request(plan, images=[1], **gen)

    def make_generator():
        return PipelineGenerator(build_pipeline(plan), **gen)

    return make_generator, plan.family.max_images


def accelerate_team():
    """The processes of an `accelerate launch` (or torchrun) and this one's GPU, or just this process."""
    from editforge.sheet.synth import Team

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Team(), None
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    # without cpu=True, PartialState on a machine with no GPU quietly runs every process as rank 0
    state = PartialState(cpu=not torch.cuda.is_available())
    team = Team(index=state.process_index, size=state.num_processes,
                share=lambda value: broadcast_object_list([value], from_process=0)[0])
    return team, str(state.device) if state.device.type == "cuda" else None
