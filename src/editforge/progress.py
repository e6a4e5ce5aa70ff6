"""How long work reports itself: one small interface that the library calls and the CLI renders.

Synth, `dataset check`, training (caching, then steps) and batch generation take a `Progress` and call

    progress.start("synth", total=120, unit="img")   # a phase: a bar of its own
    progress.advance()                               # one more done (n=..., description=... to relabel)
    progress.note("workbook not saved: ...")          # one line for the person watching

`Progress()` itself shows nothing and sends notes to the `editforge` logger: what a library caller gets
unless it passes its own. The command line renders it with rich (`editforge.cli.progress.RichProgress`).
"""

from __future__ import annotations

import logging

log = logging.getLogger("editforge")


class Progress:
    def start(self, description: str, total: int, *, unit: str = "it", per_minute: bool = False,
              completed: int = 0) -> None:
        """A new phase of `total` items (`completed` of them done already, e.g. when resuming);
        `per_minute` for slow items such as generated images."""

    def advance(self, n: int = 1, *, description: str | None = None) -> None:
        """`n` more items of the current phase are done; `description` relabels it (e.g. with the loss)."""

    def note(self, text: str) -> None:
        """A line of news: where a run's seed came from, a save that has to wait."""
        log.info("%s", text)
