"""`editforge dataset check | export | import` (see docs/dataset.md)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from editforge.cli import app
from editforge.cli.flags import for_cli
from editforge.cli.options import EditFamilyName, FamilyName, choices, value
from editforge.dataset.formats import EXPORT_FORMATS, SOURCE_FORMATS
from editforge.models.registry import EDIT_FAMILIES, FAMILIES, count_text

dataset_app = typer.Typer(
    help="Check, export and import edit datasets: synth workbooks, DiffSynth, musubi, HF parquet, folders.",
    no_args_is_help=True,
)
app.add_typer(dataset_app, name="dataset")

out_console = Console(highlight=False, soft_wrap=True)  # a long path wraps where the terminal wraps, not mid-word
err_console = Console(stderr=True, highlight=False)
EXAMPLES = 3  # issues shown per kind in the human report

SourceFormatName = choices("SourceFormatName", SOURCE_FORMATS)
ExportFormatName = choices("ExportFormatName", EXPORT_FORMATS)


def _controls_help(names) -> str:
    return "; ".join(f"{name}: {count_text(FAMILIES[name].training_image_counts, 'control')}" for name in names)


Source = Annotated[Path, typer.Argument(help="workbook, metadata file, JSONL, parquet, or dataset folder")]
SourceFormat = Annotated[Optional[SourceFormatName], typer.Option("--source-format", help="default: detected")]
TargetColumn = Annotated[Optional[str], typer.Option(
    "--target-column", help="column (folder, for a folder layout) with the target image")]
ControlColumns = Annotated[Optional[str], typer.Option(
    "--control-columns", help="comma-separated columns (folders) with the control images, in order")]
InstructionColumn = Annotated[Optional[str], typer.Option(
    "--instruction-column", help="column with the instruction (workbook default: edit_prompt, instruction, else gen_edit_prompt)")]
BaseDir = Annotated[Optional[Path], typer.Option(
    "--base-dir", help="folder relative image paths start from (default: the source's folder)")]
Sheet = Annotated[Optional[str], typer.Option("--sheet", help="workbook sheet (default: the active one)")]
OnlyAccepted = Annotated[bool, typer.Option("--only-accepted", help="workbook: only rows whose review says accepted")]
AllowOutside = Annotated[bool, typer.Option(
    "--allow-outside", help="accept image paths outside the base dir (absolute, .., symlinks out), as synth's option")]


def _load(src, source_format, target_column, control_columns, instruction_column, base_dir, sheet, only_accepted,
          allow_outside, min_judge=None):
    from editforge.dataset import Columns, load_samples

    controls = tuple(c.strip() for c in control_columns.split(",") if c.strip()) if control_columns else None
    columns = Columns(target=target_column, controls=controls, instruction=instruction_column)
    return load_samples(src, source_format=value(source_format),
                        columns=columns, base_dir=base_dir, sheet=sheet, only_accepted=only_accepted,
                        allow_outside=allow_outside, min_judge=min_judge)


def _print_skipped(skipped: list[tuple[str, str]], what: str) -> None:
    if not skipped:
        return
    reasons = Counter(reason.split(":")[0] for _, reason in skipped)
    err_console.print(f"[yellow]{what} {len(skipped)}:[/] " + escape(for_cli(
        "; ".join(f"{n}× {r}" for r, n in reasons.most_common(5)) + f" (first: {skipped[0][0]}: {skipped[0][1]})")),
        soft_wrap=True)


@dataset_app.command()
def check(
    src: Source,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON on stdout")] = False,
    min_side: Annotated[int, typer.Option("--min-side", help="warn when an image's shorter side is below this")] = 256,
    max_side: Annotated[int, typer.Option("--max-side", help="warn when an image's longer side is above this")] = 4096,
    aspect_tolerance: Annotated[float, typer.Option(
        "--aspect-tolerance", help="warn when target and control aspect ratios differ by more than this factor")] = 1.5,
    near_distance: Annotated[int, typer.Option(
        "--near-distance", help="perceptual-hash bits (of 64) for near-duplicates; 0: off")] = 4,
    workers: Annotated[Optional[int], typer.Option("--workers", help="processes decoding images (default: all cores)")] = None,
    source_format: SourceFormat = None,
    target_column: TargetColumn = None,
    control_columns: ControlColumns = None,
    instruction_column: InstructionColumn = None,
    base_dir: BaseDir = None,
    sheet: Sheet = None,
    only_accepted: OnlyAccepted = False,
    allow_outside: AllowOutside = False,
    model_family: Annotated[Optional[FamilyName], typer.Option(
        "--model-family", help="also check each sample's controls against what this family trains on ("
                               f"{_controls_help(FAMILIES)})")] = None,
) -> None:
    """Find missing, corrupt, tiny, huge, mismatched and duplicate samples. Exit 1 on errors, 0 on warnings only."""
    from editforge.cli.progress import RichProgress
    from editforge.dataset import CheckOptions, check_samples
    from editforge.errors import EditForgeError

    if min_side < 1 or max_side < min_side or aspect_tolerance < 1 or not 0 <= near_distance <= 64:
        raise EditForgeError("need 1 <= --min-side <= --max-side, --aspect-tolerance >= 1, 0 <= --near-distance <= 64")
    if workers is not None and workers < 1:
        raise EditForgeError("--workers must be 1 or more")
    data = _load(src, source_format, target_column, control_columns, instruction_column, base_dir, sheet, only_accepted,
                 allow_outside)
    if not data.samples:  # checking nothing would say "clean"
        first = f" (left out: {len(data.skipped)}, first: {data.skipped[0][0]}: {data.skipped[0][1]})" if data.skipped else ""
        raise EditForgeError(f"{data.source} ({data.format}) has no samples to check{first}")
    options = CheckOptions(min_side=min_side, max_side=max_side, aspect_tolerance=aspect_tolerance,
                           near_distance=near_distance, model_family=value(model_family))
    with RichProgress(err_console) as progress:
        report = check_samples(data.samples, options, workers=workers, progress=progress)
    report.skipped = data.skipped
    if as_json:
        typer.echo(json.dumps({"source": str(data.source), "format": data.format, **report.to_dict()}, indent=1))
    else:
        _print_report(report, data)
    raise typer.Exit(1 if report.errors else 0)


def _print_report(report, data) -> None:
    out_console.print(f"[bold]{data.source}[/] ({data.format}): {report.samples} samples, {report.images} images")
    _print_skipped(report.skipped, "left out while reading")
    if report.issues:
        table = Table(show_lines=False)
        for name in ("", "check", "count", "examples"):
            table.add_column(name, overflow="fold")
        by_kind: dict[str, list] = {}
        for issue in report.issues:
            by_kind.setdefault(issue.kind, []).append(issue)
        for (severity, kind), count in report.counts().items():
            style = "red" if severity == "error" else "yellow"
            examples = "\n".join(escape(for_cli(f"{i.sample}: {i.detail}")) for i in by_kind[kind][:EXAMPLES])
            table.add_row(f"[{style}]{severity}[/]", kind, str(count), examples)
        out_console.print(table)
    if report.judge:
        j = report.judge
        out_console.print(f"judge_score: {j['judged']} judged ({j['not_judged']} not), min {j['min']}, q1 {j['q1']}, "
                          f"median {j['median']}, q3 {j['q3']}, max {j['max']}; per tenth from 0: "
                          + " ".join(map(str, j["histogram"])))
    verdict = "[red]errors[/]" if report.errors else ("[yellow]warnings only[/]" if report.warnings else "[green]clean[/]")
    out_console.print(f"{report.errors} errors, {report.warnings} warnings: {verdict}")


@dataset_app.command()
def export(
    src: Source,
    fmt: Annotated[ExportFormatName, typer.Option("--format", "-f", help="the trainer's layout")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (new, empty, or an earlier export)")],
    model_family: Annotated[EditFamilyName, typer.Option(
        "--model-family", help=f"the model the set trains ({_controls_help(EDIT_FAMILIES)})")] = "qwen-image-edit-2509",
    link: Annotated[bool, typer.Option("--link", help="hard-link images instead of copying (same filesystem)")] = False,
    source_format: SourceFormat = None,
    target_column: TargetColumn = None,
    control_columns: ControlColumns = None,
    instruction_column: InstructionColumn = None,
    base_dir: BaseDir = None,
    sheet: Sheet = None,
    only_accepted: OnlyAccepted = False,
    allow_outside: AllowOutside = False,
    min_judge: Annotated[Optional[float], typer.Option(
        "--min-judge", min=0.0, max=1.0, help="workbook: only samples whose judge_score (editforge judge) is at least this")] = None,
) -> None:
    """Write the dataset in a trainer's layout; the source is never modified, re-exporting is safe."""
    from editforge.dataset import export_dataset

    data = _load(src, source_format, target_column, control_columns, instruction_column, base_dir, sheet, only_accepted,
                 allow_outside, min_judge)
    _print_skipped(data.skipped, "left out while reading")
    result = export_dataset(data.samples, value(fmt), out,
                            model_family=value(model_family), link=link)
    _print_skipped(result.skipped, "left out of the export")
    out_console.print(f"exported {len(result.exported)} samples to {result.out_dir} ({result.format}, {result.family})")


@dataset_app.command("import")
def import_(
    src: Source,
    out: Annotated[Path, typer.Option("--out", "-o", help="the workbook to create (.xlsx or .csv)")],
    force: Annotated[bool, typer.Option("--force", help="replace the workbook if it exists")] = False,
    source_format: SourceFormat = None,
    target_column: TargetColumn = None,
    control_columns: ControlColumns = None,
    instruction_column: InstructionColumn = None,
    base_dir: BaseDir = None,
    sheet: Sheet = None,
    only_accepted: OnlyAccepted = False,
    allow_outside: AllowOutside = False,
) -> None:
    """Turn any dataset into a workbook in the synth layout, for review and synth."""
    from editforge.dataset import import_to_workbook

    data = _load(src, source_format, target_column, control_columns, instruction_column, base_dir, sheet, only_accepted,
                 allow_outside)
    _print_skipped(data.skipped, "left out while reading")
    path, skipped = import_to_workbook(data.samples, out, force=force)
    _print_skipped(skipped, "left out of the workbook")
    out_console.print(f"wrote {len(data.samples) - len(skipped)} samples to {path}")
