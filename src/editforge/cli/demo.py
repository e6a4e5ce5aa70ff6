"""`editforge demo FOLDER`: write a demo workbook for the quickstart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from editforge.cli import app

TINY_NOTE = ("the tiny models have random weights: their pictures are noise whatever the inputs; "
             "the demo shows the workflow, a real model (--model qwen-image-edit-2509) makes real pictures")


@app.command()
def demo(
    folder: Annotated[Path, typer.Argument(help="where to write demo.xlsx and its images")] = Path("demo"),
    quiet: Annotated[bool, typer.Option("--quiet", help="print only the workbook's path (scripts/demo.sh runs the next steps itself)")] = False,
) -> None:
    """Write a small annotation workbook (every synth case) to try `editforge synth` on a tiny model."""
    from editforge.demo import make_demo_workbook

    path = make_demo_workbook(folder)
    if quiet:
        typer.echo(path)
        return
    typer.echo(f"wrote {path}: one row per synth case (docs/synth.md, \"What each row gets\")\n"
               f"next: editforge synth {path} --model tiny-qwen-image-edit-2509 --lightning 8\n"
               f"note: {TINY_NOTE}")
