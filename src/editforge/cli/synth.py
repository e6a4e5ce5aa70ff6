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
from editforge.cli.flags import for_cli
from editforge.cli.generate import _warnings_to_console
from editforge.cli.options import GENERATION, LOAD, Model
from editforge.errors import EditForgeError
from editforge.inference.options import GenerationOptions
from editforge.models.options import LightningSteps, LoadOptions

# The one test seam of the command line: "module:function" naming a zero-argument factory of a generator
# `(images, prompt, seed) -> (image, params)`, used instead of a model. The crash, kill -9 and multi-process
# tests start real `editforge synth` processes with a fake generator through it (`editforge.sheet.fake`).
# The library takes the factory as an argument (`synth_with_model(make_generator=...)`).
GENERATOR_ENV = "EDITFORGE_SYNTH_GENERATOR"

console = Console(stderr=True)


@app.command()
@LOAD.expand("load", lightning=LightningSteps.EIGHT, compile=None)
@GENERATION.expand("generation")
def synth(
    workbook: Annotated[Path, typer.Argument(help="the annotation workbook (.xlsx, .xlsm or .csv)")],
    sheet: Annotated[Optional[str], typer.Option("--sheet", help="sheet name (default: the active sheet)")] = None,
    base_dir: Annotated[Optional[Path], typer.Option("--base-dir", help="folder the image paths are relative to (default: the workbook's)")] = None,
    columns: Annotated[Optional[str], typer.Option("--columns", help="header names that differ, e.g. gen_edit_prompt=Prompt,need_gen=Todo")] = None,
    model: Model = "qwen-image-edit-2509",
    load: LoadOptions = None,
    generation: GenerationOptions = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="base seed; each row's seed derives from it and the row (default: random, printed, remembered in the journal)")] = None,
    max_rows: Annotated[Optional[int], typer.Option("--max-rows", min=0, help="generate at most this many rows")] = None,
    retries: Annotated[int, typer.Option("--retries", min=0, help="new seeds to try when an output fails the quality gate (or --judge-min)")] = 2,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, write nothing, load no model")] = False,
    allow_outside: Annotated[bool, typer.Option("--allow-outside", help="accept image paths outside the base dir")] = False,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="try rows that failed in an earlier run again, although their inputs did not change")] = False,
    out_raw: Annotated[str, typer.Option("--out-raw", help="folder for generated samples, relative to the base dir")] = "generated/raw",
    out_ref: Annotated[str, typer.Option("--out-ref", help="folder for generated references, relative to the base dir")] = "generated/ref",
    save_every: Annotated[int, typer.Option("--save-every", min=1, help="write the workbook every N rows ...")] = 100,
    save_interval: Annotated[float, typer.Option("--save-interval", min=0, help="... or every T seconds")] = 60.0,
    ray: Annotated[Optional[str], typer.Option("--ray", rich_help_panel="Ray cluster", help="make the pictures on a Ray cluster: local (start one here), auto (join the one `ray start` runs on this machine) or its ADDRESS (host:port)")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, rich_help_panel="Ray cluster", help="Ray workers, each loading the model once (default: the cluster's GPUs / --gpus-per-worker; 1 without GPUs)")] = None,
    gpus_per_worker: Annotated[float, typer.Option("--gpus-per-worker", min=0.01, rich_help_panel="Ray cluster", help="GPUs each Ray worker takes")] = 1.0,
    judge: Annotated[bool, typer.Option("--judge", help="score each new pair with the pipeline's own text encoder (judge_score; see docs/judge.md)")] = False,
    judge_min: Annotated[Optional[float], typer.Option("--judge-min", min=0.0, max=1.0, help="make a pair scoring below this again with the next seed, within --retries (implies --judge)")] = None,
) -> None:
    """Generate the missing pictures of every need_gen row, crash-safe, on one GPU or many."""
    from editforge.cli.progress import RichProgress
    from editforge.sheet.launch import synth_with_model
    from editforge.sheet.synth import SynthOptions, dry_run as plan_text

    options = SynthOptions(
        sheet=sheet, base_dir=base_dir, columns=parse_columns(columns), out_raw=out_raw, out_ref=out_ref,
        seed=seed, max_rows=max_rows, retries=retries, allow_outside=allow_outside, retry_failed=retry_failed,
        save_every_rows=save_every, save_every_seconds=save_interval, judge=judge or judge_min is not None,
        judge_min=judge_min,
    )
    if dry_run:
        typer.echo(for_cli(plan_text(workbook, options)))
        return
    _warnings_to_console()
    seam = os.environ.get(GENERATOR_ENV)
    make_generator = _import(seam) if seam else None
    engine = None
    if ray is not None:
        from editforge.sheet.ray_engine import RayEngine

        engine = RayEngine(ray, workers=workers, gpus_per_worker=gpus_per_worker)
    elif workers is not None:
        raise EditForgeError("--workers is the number of Ray workers; add --ray local|auto|ADDRESS")
    with RichProgress(console) as progress:
        summary = synth_with_model(workbook, model, options, load=load, generation=generation,
                                   make_generator=make_generator, progress=progress, engine=engine)
    if summary.main:  # under accelerate launch: one report, from the main process
        report(summary, "gen_status", extra=summary.workers_line())
    raise typer.Exit(summary.exit_code)


def report(summary, status_column: str, shown: int = 20, extra: str | None = None) -> None:
    """A run's failures (the first `shown`), notes, an `extra` line and the summary line: synth's and judge's."""
    for row, reason in summary.failures[:shown]:
        console.print(f"[red]failed[/] row {row}: {escape(for_cli(reason))}", highlight=False, emoji=False)
    if len(summary.failures) > shown:
        console.print(f"... and {len(summary.failures) - shown} more failures (see {status_column})")
    for note in summary.notes:
        console.print(f"[yellow]note[/] {escape(for_cli(note))}", highlight=False)
    if extra:
        console.print(escape(extra), highlight=False)
    typer.echo(for_cli(summary.line()))


def _import(seam: str):
    module, _, name = seam.partition(":")
    return getattr(importlib.import_module(module), name)


def parse_columns(text: str | None) -> dict[str, str]:
    """`gen_edit_prompt=Prompt,need_gen=Todo` -> {"gen_edit_prompt": "Prompt", "need_gen": "Todo"}."""
    mapping = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, header = part.partition("=")
        if not sep or not key.strip() or not header.strip():
            raise EditForgeError(f"--columns wants key=Header pairs separated by commas, got {part!r}")
        mapping[key.strip()] = header.strip()
    return mapping
