"""`synth_with_model`: synth as `editforge synth` runs it, callable from Python.

    summary = synth_with_model("data.xlsx", "qwen-image-edit-2509", SynthOptions(seed=7),
                               load=LoadOptions(lightning=8), generation=GenerationOptions(max_pixels=768 * 768))
    summary = synth_with_model("data.xlsx", "qwen-image-edit-2509", engine=RayEngine("auto"))   # on a Ray cluster

The workbook is checked first, then the model's options and files, then the Ray cluster if one is asked for
(nothing is written before all hold); under `accelerate launch` each process takes its share of the rows on its
own GPU; with a `RayEngine` this process is the driver and the cluster's workers load the model.
`make_generator` replaces the model (a fake for tests): a zero-argument factory of `(images, prompt, seed) ->
(image, params)`, called where the pictures are made (on Ray: in each worker, so it must pickle).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Callable

from editforge.errors import EditForgeError
from editforge.progress import Progress
from editforge.sheet.engine import Generator
from editforge.sheet.synth import Summary, SynthOptions, check_workbook, synth
from editforge.sheet.team import Team, accelerate_team


def synth_with_model(workbook: str | Path, model: str, options: SynthOptions | None = None, *, load=None,
                     generation=None, make_generator: Callable[[], Generator] | None = None, team: Team | None = None,
                     progress: Progress | None = None, engine=None) -> Summary:
    """`load`: `LoadOptions`, `generation`: `GenerationOptions` (defaults: the model's). `team`: default
    `accelerate_team()`. `engine`: a `RayEngine` (default: this process makes the pictures)."""
    options = options or SynthOptions()
    check_workbook(workbook, options)  # a bad workbook is found before a model is looked for
    team = team or accelerate_team()
    if engine is not None and team.size > 1:
        raise EditForgeError("`ray` starts its own workers: run one process, not `accelerate launch`")
    if make_generator is None:
        from editforge.inference.generator import load_generator, model_generator
        from editforge.models.options import LoadOptions

        load = load or LoadOptions()
        if engine is not None:
            if load.device is not None:
                raise EditForgeError("with `ray` each worker uses the GPU Ray gives it; drop `device`")
            # checked here on the driver, which may have no GPU; each worker resolves device and files itself
            _, max_inputs = model_generator(model, dataclasses.replace(load, device="cpu", offload=None), generation)
            make_generator = functools.partial(load_generator, model, load, generation)
        else:
            if load.device is None and team.device is not None:
                load = dataclasses.replace(load, device=team.device)
            make_generator, max_inputs = model_generator(model, load, generation)
        if options.judge:
            from editforge.judge.model import find_judge

            find_judge(model)  # the text encoder's head checked in its files, before the workbook is touched
        options = dataclasses.replace(options, max_inputs=max_inputs)
    if engine is not None:
        engine.connect()
        if progress is not None:
            progress.note(engine.describe())
    return synth(workbook, make_generator, options, team=team, progress=progress, engine=engine)
