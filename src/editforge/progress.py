"""One look for every long-running loop: a rich progress bar with count, rate and ETA."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second (or per minute, for slow items like generated images)."""

    def __init__(self, unit: str, per_minute: bool = False):
        super().__init__()
        self.unit = unit + ("/min" if per_minute else "/s")
        self.factor = 60.0 if per_minute else 1.0

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("–" if speed is None else f"{speed * self.factor:.1f} {self.unit}", style="cyan")


def progress_bar(unit: str = "it", *, per_minute: bool = False, console: Console | None = None,
                 enabled: bool = True) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit, per_minute),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        disable=not enabled,
    )
