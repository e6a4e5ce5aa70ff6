"""`editforge judge`: score every pair of a workbook with a vision-language model (see docs/judge.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from editforge.cli import app
from editforge.cli.options import MODEL_HELP


@app.command()
def judge(
    workbook: Annotated[Path, typer.Argument(help="the annotation workbook (.xlsx, .xlsm or .csv)")],
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
) -> None:
    """Score every pair (inputs, output, instruction) with P(yes) from a vision-language model: judge_score."""
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
