"""`editforge review`: review generated pictures in a browser (see docs/review.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from editforge.cli import app
from editforge.errors import EditForgeError


@app.command()
def review(
    workbook: Annotated[Path, typer.Argument(help="the annotation workbook (.xlsx, .xlsm or .csv)")],
    base_dir: Annotated[Optional[Path], typer.Option("--base-dir", help="folder the image paths are relative to (default: the workbook's); nothing outside it is served")] = None,
    host: Annotated[str, typer.Option("--host", help="address to listen on; 0.0.0.0 opens it to your network")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="port (0: any free one)")] = 7860,
    sheet: Annotated[Optional[str], typer.Option("--sheet", help="sheet name (default: the active sheet)")] = None,
    columns: Annotated[Optional[str], typer.Option("--columns", help="header names that differ, as for synth: gen_edit_prompt=Prompt,...")] = None,
    export_dir: Annotated[Optional[Path], typer.Option("--export-dir", help="the page exports only into folders under this one (default: the base dir)")] = None,
) -> None:
    """Accept, reject or regenerate generated pictures in a browser; export the accepted rows."""
    from editforge.cli.synth import parse_columns

    try:
        from editforge.review.server import ReviewServer
    except ImportError as exc:  # starlette/uvicorn are an extra: the GPU box that only synths skips them
        raise EditForgeError(f"editforge review needs {exc.name}: pip install 'editforge[review]'") from None
    from editforge.review.session import ReviewSession

    session = ReviewSession(workbook, base_dir=base_dir, sheet=sheet, columns=parse_columns(columns),
                            export_dir=export_dir)
    server = ReviewServer(session, host=host, port=port)
    typer.echo(f"reviewing {workbook.name} on {server.url}  (Ctrl-C stops; queued changes are written first)")
    typer.echo(f"exports go under {session.export_dir}; the address carries this run's token: share it only "
               "with who may change the workbook")
    server.run()
