"""`editforge bench infer|train`: speed and memory, tiny on CPU or full size on a GPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from editforge.cli import app
from editforge.cli.options import EditFamilyName, choices, value
from editforge.errors import EditForgeError

Kind = choices("Kind", ("infer", "train"))
Size = choices("Size", ("tiny", "full"))


@app.command()
def bench(
    kind: Annotated[Kind, typer.Argument(help="generation or LoRA training")],
    size: Annotated[Size, typer.Option("--size", help="tiny (CPU, seconds) or full (the real 20B architecture, GPU)")] = "tiny",
    family: Annotated[EditFamilyName, typer.Option("--family", help="the edit model whose architecture is measured")] = "qwen-image-edit-2509",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="also write the results as JSON")] = None,
    markdown_path: Annotated[Optional[Path], typer.Option("--markdown", help="append the table as markdown (e.g. docs/benchmarks.md)")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="default: cuda if present")] = None,
    configs: Annotated[Optional[str], typer.Option("--configs", help="infer: comma list of seed,bf16-fused,fast,fast-fp8")] = None,
) -> None:
    """Benchmark generation (seed setup vs diffusers bf16 vs the fast path) or LoRA training."""
    from editforge.benchmark import infer, report, train

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
