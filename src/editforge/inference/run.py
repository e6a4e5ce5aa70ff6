"""Run a list of batch jobs: check every input first, load the model once, write PNGs with metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from editforge.errors import EditForgeError
from editforge.images import open_rgb
from editforge.inference.batch import BatchJob
from editforge.inference.generate import check_load_request, generate, text_to_image
from editforge.inference.metadata import save_png_atomic
from editforge.progress import progress_bar


def run_jobs(
    model: str,
    load_options: dict[str, Any],
    jobs: list[BatchJob],
    *,
    out: Path | None,
    out_dir: Path | None,
    seed: int,
    gen: dict[str, Any],
    aspect: str | None = None,
    magic: str | None = None,
) -> list[Path]:
    """Generate every job with the same `seed`; `out` names the single output, else `out_dir/NNNN.png`."""
    from editforge.models.loading import build_pipeline, prepare_load

    if out is not None and out.suffix.lower() != ".png":
        raise EditForgeError(f"--out {out}: EditForge writes PNG (it carries the generation parameters); use .png")
    # Every input and option is checked before the model loads (a typo on line 900 should not cost a
    # model load); images are read again when their job comes: holding a thousand decoded photos would
    # take tens of GB.
    _check_images(jobs)
    plan = prepare_load(model, **load_options)
    check_load_request(plan, images=[len(job.images) for job in jobs], **gen)
    pipe = build_pipeline(plan)
    targets = [out] if out is not None else [out_dir / f"{job.index:04d}.png" for job in jobs]
    with progress_bar("img", per_minute=True) as bar:
        task = bar.add_task("generating", total=len(jobs))
        for job, target in zip(jobs, targets):
            images = [open_rgb(path) for path in job.images]
            if images:
                image, params = generate(pipe, images, job.prompt, seed=seed, **gen)
                params["inputs"] = [str(p) for p in job.images]
            else:
                image, params = text_to_image(pipe, job.prompt, seed=seed, aspect=aspect or "1:1", magic=magic, **gen)
            save_png_atomic(image, target, params)
            bar.advance(task)
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
