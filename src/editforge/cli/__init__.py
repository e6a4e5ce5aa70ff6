"""The `editforge` command. Thin: each subcommand parses, calls one library function, prints."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from editforge.errors import EditForgeError

app = typer.Typer(
    name="editforge",
    help="Build image-editing datasets with Qwen-Image-Edit and fine-tune LoRAs on them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)

# Each module registers its commands on `app` when imported.
from editforge.cli import generate  # noqa: E402,F401


def main() -> None:
    try:
        app()
    except EditForgeError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
