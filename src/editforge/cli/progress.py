"""The command line's view of `editforge.progress.Progress`: a rich bar per phase with count, rate and ETA,
and notes printed above it (with the library's parameter names turned into this command line's flags)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichBars
from rich.text import Text

from editforge.cli.flags import for_cli
from editforge.progress import Progress


class RateColumn(ProgressColumn):
    """Items per second (or per minute, for slow items like generated images), in each task's own unit."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        factor, unit = (60.0, "/min") if task.fields.get("per_minute") else (1.0, "/s")
        return Text("–" if speed is None else f"{speed * factor:.1f} {task.fields.get('unit', 'it')}{unit}",
                    style="cyan")


class RichProgress(Progress):
    """Use as a context manager around the work: the bars live between enter and exit. `enabled=False` shows
    no bars (notes still print)."""

    def __init__(self, console: Console | None = None, *, enabled: bool = True):
        self.console = console or Console(stderr=True)
        self.bars = RichBars(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
            TextColumn("ETA"), TimeRemainingColumn(), console=self.console, disable=not enabled,
        )
        self.task = None

    def __enter__(self) -> RichProgress:
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.stop()

    def start(self, description: str, total: int, *, unit: str = "it", per_minute: bool = False,
              completed: int = 0) -> None:
        self.task = self.bars.add_task(description, total=total, completed=completed, unit=unit,
                                       per_minute=per_minute)

    def advance(self, n: int = 1, *, description: str | None = None) -> None:
        self.bars.update(self.task, advance=n, **({"description": description} if description else {}))

    def note(self, text: str) -> None:
        self.console.print(escape(for_cli(text)), highlight=False, soft_wrap=True, emoji=False)
