"""`editforge bench infer|train`: speed and memory, tiny on CPU or full size on a GPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from editforge.cli import app
from editforge.errors import EditForgeError


@app.command()
def bench(
    kind: Annotated[str, typer.Argument(help="infer, train or plan (full size on a fake GPU, any machine)")],
    size: Annotated[str, typer.Option("--size", help="tiny (CPU, seconds) or full (the real 20B architecture, GPU)")] = "tiny",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="also write the results as JSON")] = None,
    markdown_path: Annotated[Optional[Path], typer.Option("--markdown", help="append the table as markdown (e.g. docs/benchmarks.md)")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="default: cuda if present")] = None,
    configs: Annotated[Optional[str], typer.Option("--configs", help="infer: comma list of seed,bf16-fused,fast,fast-fp8")] = None,
) -> None:
    """Benchmark generation (seed setup vs diffusers bf16 vs the fast path) or LoRA training, or `plan`: the
    full-size models' FLOPs, memory and host syncs on a fake GPU, and which configuration fits which card."""
    from editforge.benchmark import infer, report, train

    if kind == "plan":
        return _plan(json_path, markdown_path)
    if size not in ("tiny", "full"):
        raise EditForgeError(f"--size must be tiny or full, not {size}")
    if kind == "infer":
        chosen = tuple(configs.split(",")) if configs else infer.CONFIGS
        unknown = set(chosen) - set(infer.CONFIGS)
        if unknown:
            raise EditForgeError(f"--configs: unknown {', '.join(sorted(unknown))}; choose from {', '.join(infer.CONFIGS)}")
        result = infer.run(size, device=device, configs=chosen)
    elif kind == "train":
        result = train.run(size, device=device)
    else:
        raise EditForgeError(f"editforge bench infer|train|plan, not {kind}")
    Console().print(report.table(result))
    if json_path:
        json_path.write_text(json.dumps(result, indent=2))
    if markdown_path:
        with open(markdown_path, "a", encoding="utf-8") as fh:
            fh.write("\n" + report.markdown(result))


def _plan(json_path: Path | None, markdown_path: Path | None) -> None:
    from editforge.plan import run_plan
    from editforge.plan.report import markdown

    console = Console(stderr=True)
    with console.status("building the full-size models on a fake GPU") as status:
        result = run_plan(log=lambda line: status.update(line))
    text = markdown(result)
    typer.echo(text)
    if json_path:
        json_path.write_text(json.dumps(result, indent=1))
    if markdown_path:
        with open(markdown_path, "a", encoding="utf-8") as fh:
            fh.write("\n" + text)
