"""The `editforge` command. Thin: each subcommand parses, calls one library function, prints."""

from __future__ import annotations

import os
import sys

import typer
from typer._click import exceptions as click_errors  # typer 0.29 carries its own click
from rich.console import Console
from rich.markup import escape

from editforge.cli.flags import for_cli
from editforge.errors import EditForgeError

app = typer.Typer(
    name="editforge",
    help="Build image-editing datasets with Qwen-Image-Edit and fine-tune LoRAs on them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


def _print_version(value: bool) -> None:
    if value:
        from editforge import __version__

        typer.echo(f"editforge {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="print the version and exit"),
) -> None:
    """Build image-editing datasets with Qwen-Image-Edit and fine-tune LoRAs on them."""

# Each module registers its commands on `app` when imported.
from editforge.cli import bench  # noqa: E402,F401
from editforge.cli import demo  # noqa: E402,F401
from editforge.cli import generate  # noqa: E402,F401
from editforge.cli import review  # noqa: E402,F401
from editforge.cli import dataset  # noqa: E402,F401
from editforge.cli import train  # noqa: E402,F401
from editforge.cli import synth  # noqa: E402,F401
from editforge.cli import judge  # noqa: E402,F401


def _quiet_third_party_logs() -> None:
    """diffusers' and transformers' notices bury the one line a user needs to read; EditForge checks what
    they are about (e.g. LoRA keys that match nothing) itself. Known harmless messages of other libraries
    are filtered one by one for the Python API too (`editforge.quiet`)."""
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main() -> None:
    _quiet_third_party_logs()
    try:
        code = app(standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:  # `editforge dataset`: typer has printed its help
        code = exc.exit_code
    except click_errors.UsageError as exc:  # a bad flag or value: one line too, naming the flag
        _error(" ".join(exc.format_message().replace("Value error, ", "").split()))
    except EditForgeError as exc:
        _error(for_cli(str(exc)))
    except typer.Abort:
        code = 1
    sys.exit(code if isinstance(code, int) else 0)


def _error(message: str) -> None:
    # the message is text, not markup: a path like `style.safetensors:abc:` must not become an emoji
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True, emoji=False)
    sys.exit(2)
