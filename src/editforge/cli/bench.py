"""`editforge bench infer|train|plan`: speed and memory, tiny on CPU or full size on a GPU; `plan`: the full-size
models on a fake GPU (FLOPs, memory, host syncs, what fits which card), on any machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from editforge.cli import app
from editforge.cli.options import EditFamilyName, choices, value
from editforge.errors import EditForgeError

Kind = choices("Kind", ("infer", "train", "plan"))
Size = choices("Size", ("tiny", "full"))


@app.command()
def bench(
    kind: Annotated[Kind, typer.Argument(help="infer, train or plan (the full-size models on a fake GPU, any machine)")],
    size: Annotated[Size, typer.Option("--size", help="tiny (CPU, seconds) or full (the real 20B architecture, GPU)")] = "tiny",
    family: Annotated[EditFamilyName, typer.Option("--family", help="the edit model whose architecture is measured")] = "qwen-image-edit-2509",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="also write the results as JSON")] = None,
    markdown_path: Annotated[Optional[Path], typer.Option("--markdown", help="append the table as markdown (e.g. docs/benchmarks.md)")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="default: cuda if present")] = None,
    configs: Annotated[Optional[str], typer.Option("--configs", help="infer: comma list of seed,bf16-fused,fast,fast-fp8")] = None,
    needs_path: Annotated[Optional[Path], typer.Option("--needs", help="plan: write the memory table loading checks (src/editforge/models/memory_needs.json)")] = None,
) -> None:
    """Benchmark generation (seed setup vs diffusers bf16 vs the fast path) or LoRA training, or `plan`: the
    full-size models' FLOPs, memory and host syncs on a fake GPU, and which configuration fits which card."""
    from editforge.benchmark import infer, report, train

    if value(kind) == "plan":
        return _plan(json_path, markdown_path, needs_path)
    if value(kind) == "infer":
        chosen = tuple(configs.split(",")) if configs else infer.CONFIGS
        unknown = set(chosen) - set(infer.CONFIGS)
        if unknown:
            raise EditForgeError(f"--configs: unknown {', '.join(sorted(unknown))}; choose from {', '.join(infer.CONFIGS)}")
        result = infer.run(value(size), family=value(family), device=device, configs=chosen)
    else:
        result = train.run(value(size), family=value(family), device=device)
    Console().print(report.table(result))
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))
    if markdown_path:
        with open(markdown_path, "a", encoding="utf-8") as fh:
            fh.write("\n" + report.markdown(result))


def _plan(json_path: Path | None, markdown_path: Path | None, needs_path: Path | None) -> None:
    from editforge.plan import run_plan
    from editforge.plan.fit import memory_table
    from editforge.plan.report import markdown

    from editforge.cli.progress import RichProgress

    with RichProgress() as progress:
        result = run_plan(progress=progress)
    if json_path:  # first: the measurement is the expensive part
        json_path.write_text(json.dumps(result, indent=1))
    if needs_path:
        needs_path.write_text(json.dumps(memory_table(result), indent=1, sort_keys=True) + "\n")
    text = markdown(result)
    typer.echo(text)
    if markdown_path:
        with open(markdown_path, "a", encoding="utf-8") as fh:
            fh.write("\n" + text)
