"""`editforge demo FOLDER`: write a demo workbook for the quickstart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from editforge.cli import app


@app.command()
def demo(folder: Annotated[Path, typer.Argument(help="where to write demo.xlsx and its images")] = Path("demo")) -> None:
    """Write a small annotation workbook (every synth case) to try `editforge synth` on a tiny model."""
    from editforge.demo import make_demo_workbook

    path = make_demo_workbook(folder)
    typer.echo(f"wrote {path}\nnext: editforge synth {path} --model tiny-qwen-image-edit-2509 --lightning 8")
