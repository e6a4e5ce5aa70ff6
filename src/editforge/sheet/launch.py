"""`synth_with_model`: synth as `editforge synth` runs it, callable from Python.

    summary = synth_with_model("data.xlsx", "qwen-image-edit-2509", SynthOptions(seed=7),
                               load=LoadOptions(lightning=8), generation=GenerationOptions(max_pixels=768 * 768))

The workbook is checked first, then the model's options and files (nothing is written before both hold);
under `accelerate launch` each process takes its share of the rows on its own GPU. `make_generator` replaces
the model (a fake for tests, another engine): a zero-argument factory of `(images, prompt, seed) ->
(image, params)`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from editforge.progress import Progress
from editforge.sheet.synth import Generator, Summary, SynthOptions, check_workbook, synth
from editforge.sheet.team import Team, accelerate_team


def synth_with_model(workbook: str | Path, model: str, options: SynthOptions | None = None, *, load=None,
                     generation=None, make_generator: Callable[[], Generator] | None = None, team: Team | None = None,
                     progress: Progress | None = None) -> Summary:
    """`load`: `LoadOptions`, `generation`: `GenerationOptions` (defaults: the model's). `team`: default
    `accelerate_team()`."""
    options = options or SynthOptions()
    check_workbook(workbook, options)  # a bad workbook is found before a model is looked for
    team = team or accelerate_team()
    if make_generator is None:
        from editforge.inference.generator import model_generator
        from editforge.models.options import LoadOptions

        load = load or LoadOptions()
        if load.device is None and team.device is not None:
            load = dataclasses.replace(load, device=team.device)
        make_generator, max_inputs = model_generator(model, load, generation)
        if options.judge:
            from editforge.judge.model import find_judge

            find_judge(model)  # the text encoder's head checked in its files, before the workbook is touched
        options = dataclasses.replace(options, max_inputs=max_inputs)
    return synth(workbook, make_generator, options, team=team, progress=progress)
