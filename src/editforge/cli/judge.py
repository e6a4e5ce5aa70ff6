"""`editforge judge`: score every pair of a workbook with a vision-language model (see docs/judge.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from editforge.cli import app
from editforge.cli.options import GENERATION, MODEL_HELP
from editforge.errors import EditForgeError
from editforge.inference.options import GenerationOptions


@app.command()
@GENERATION.expand("generation")
def judge(
    workbook: Annotated[Optional[Path], typer.Argument(help="the annotation workbook (.xlsx, .xlsm or .csv)")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help=f"the pipeline whose text encoder judges: {MODEL_HELP}")] = "qwen-image-edit-2509",
    judge_model: Annotated[Optional[str], typer.Option("--judge-model", help="judge with this Qwen2.5-VL instead (folder or hub id, e.g. Qwen/Qwen2.5-VL-3B-Instruct)")] = None,
    reason: Annotated[bool, typer.Option("--reason", help="also write a short greedy-decoded reason into judge_reason")] = False,
    write_instructions: Annotated[bool, typer.Option("--write-instructions", help="draft edit_prompt where a row has only a generation prompt (never over a filled cell; marked in edit_prompt_source)")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="pairs per model call")] = 8,
    pixels: Annotated[Optional[int], typer.Option("--judge-pixels", min=28 * 28, help="area each image gets in the judge (default 384x384; tiny models 56x56)")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="cpu, cuda or cuda:N (default: cuda if present)")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="bf16 or fp32 (default: bf16 on a GPU, fp32 on a CPU)")] = None,
    sheet: Annotated[Optional[str], typer.Option("--sheet", help="sheet name (default: the active sheet)")] = None,
    base_dir: Annotated[Optional[Path], typer.Option("--base-dir", help="folder the image paths are relative to (default: the workbook's)")] = None,
    columns: Annotated[Optional[str], typer.Option("--columns", help="header names that differ, as for synth: gen_edit_prompt=Prompt,...")] = None,
    allow_outside: Annotated[bool, typer.Option("--allow-outside", help="accept image paths outside the base dir")] = False,
    save_every: Annotated[int, typer.Option("--save-every", min=1, help="write the workbook every N pairs ...")] = 100,
    save_interval: Annotated[float, typer.Option("--save-interval", min=0, help="... or every T seconds")] = 60.0,
    lora: Annotated[Optional[str], typer.Option("--lora", help="judge this LoRA instead of a workbook: --pairs edited with and without it")] = None,
    pairs: Annotated[Optional[Path], typer.Option("--pairs", help="with --lora: held-out pairs (any `editforge dataset` source)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="with --lora: the seed of the first pair (then +1 per pair)")] = 0,
    group_column: Annotated[Optional[str], typer.Option("--group-column", help="with --lora: also report per value of this column (an instruction type)")] = None,
    generation: GenerationOptions = None,
) -> None:
    """Score every pair (inputs, output, instruction) with P(yes) from a vision-language model: judge_score.
    With --lora and --pairs: compare a LoRA's held-out edits with the base model's."""
    if lora is not None or pairs is not None:
        return _judge_lora(workbook, model, judge_model, lora, pairs, seed, group_column, device, dtype, generation)
    if workbook is None:
        raise EditForgeError("give a WORKBOOK to judge, or --lora with --pairs")
    from editforge.cli.progress import RichProgress
    from editforge.cli.synth import console, parse_columns, report
    from editforge.judge.workbook import JudgeOptions, judge_with_model

    options = JudgeOptions(sheet=sheet, base_dir=base_dir, columns=parse_columns(columns), allow_outside=allow_outside,
                           reason=reason, write_instructions=write_instructions, batch_size=batch_size, save_every_rows=save_every,
                           save_every_seconds=save_interval)
    with RichProgress(console) as progress:
        summary = judge_with_model(workbook, model, options, judge_model=judge_model, device=device, dtype=dtype,
                                   pixels=pixels, progress=progress)
    report(summary, "judge_reason")
    raise typer.Exit(summary.exit_code)


def _judge_lora(workbook, model, judge_model, lora, pairs, seed, group_column, device, dtype, generation) -> None:
    from editforge.cli.progress import RichProgress
    from editforge.cli.synth import console
    from editforge.judge.lora import judge_lora
    from editforge.models.options import LoadOptions

    if lora is None or pairs is None or workbook is not None or judge_model is not None:
        raise EditForgeError("judging a LoRA takes --lora and --pairs (held-out pairs), no WORKBOOK and no --judge-model")
    with RichProgress(console) as progress:
        report = judge_lora(model, lora, pairs, load=LoadOptions(device=device, dtype=dtype), generation=generation,
                            seed=seed, group_column=group_column, progress=progress)
    for line in report.lines():
        typer.echo(line)
