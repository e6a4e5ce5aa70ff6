"""Run a list of batch jobs: check every input first, load the model once, write PNGs with metadata."""

from __future__ import annotations

from pathlib import Path

from editforge.errors import EditForgeError
from editforge.images import open_rgb
from editforge.inference.batch import BatchJob
from editforge.inference.generate import check_load_request, generate, text_to_image
from editforge.inference.metadata import save_png_atomic
from editforge.inference.options import GenerationOptions
from editforge.models.options import LoadOptions
from editforge.progress import Progress


def run_jobs(model: str, load: LoadOptions | None, jobs: list[BatchJob], *, out: Path | None, out_dir: Path | None,
             seed: int, generation: GenerationOptions | None = None, aspect: str | None = None,
             magic: str | None = None, progress: Progress | None = None) -> list[Path]:
    """Generate every job with the same `seed`; `out` names the single output, else `out_dir/NNNN.png`."""
    from editforge.models.loading import build_pipeline, prepare_load

    generation = generation or GenerationOptions()
    progress = progress or Progress()
    if out is not None and out.suffix.lower() != ".png":
        raise EditForgeError(f"`out` {out}: EditForge writes PNG (it carries the generation parameters); use .png")
    # Every input and option is checked before the model loads (a typo on line 900 should not cost a
    # model load); images are read again when their job comes: holding a thousand decoded photos would
    # take tens of GB.
    _check_images(jobs)
    plan = prepare_load(model, load)
    check_load_request(plan, images=[len(job.images) for job in jobs], options=generation)
    pipe = build_pipeline(plan)
    targets = [out] if out is not None else [out_dir / f"{job.index:04d}.png" for job in jobs]
    progress.start("generating", total=len(jobs), unit="img", per_minute=True)
    for job, target in zip(jobs, targets):
        images = [open_rgb(path) for path in job.images]
        if images:
            image, params = generate(pipe, images, job.prompt, seed=seed, options=generation)
            params["inputs"] = [str(p) for p in job.images]
        else:
            image, params = text_to_image(pipe, job.prompt, seed=seed, aspect=aspect or "1:1", magic=magic,
                                          options=generation)
        save_png_atomic(image, target, params)
        progress.advance()
    return targets


def _check_images(jobs: list[BatchJob]) -> None:
    seen: set[Path] = set()
    for job in jobs:
        for path in job.images:
            if path in seen:
                continue
            seen.add(path)
            try:
                open_rgb(path)
            except EditForgeError as exc:
                raise EditForgeError(f"{job.line}: {exc}" if job.line else str(exc)) from None
