"""Previews during training: the validation samples rendered with the in-training LoRA.

Prompt embeddings of the previews are computed once, before the text encoder leaves the GPU; each
preview is then the pipeline call `editforge.generate` makes too (`editforge.inference.call`: sizes, negative
prompt, seed), with those embeddings, so a preview is what a user gets from `editforge edit --lora` with the
saved file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from editforge.errors import EditForgeError
from editforge.images import open_rgb
from editforge.inference.call import Prompt, call_arguments, negative_prompt_for, run_call
from editforge.inference.sizes import default_size
from editforge.models.registry import count_text, family_of
from editforge.train.cache import condition_inputs, encode_prompt


@dataclass
class Preview:
    controls: list[Image.Image]
    reference: Image.Image | None
    prompt: Prompt  # (embeds, mask) from the pipeline's encode_prompt
    negative: Prompt | None
    size: tuple[int, int]


@torch.no_grad()
def prepare_previews(pipe, samples, *, cfg: float, max_pixels: int, condition_pixels: int | None) -> list[Preview]:
    family = family_of(pipe)
    previews = []
    for i, sample in enumerate(samples):
        # checked here, before training: a bad preview would otherwise fail hours in, at the first validation
        if len(sample.controls) not in family.image_counts:
            need = count_text(family.image_counts, "control image")
            raise EditForgeError(f"validation.samples[{i}]: {family.name} previews need {need}, "
                                 f"this one has {len(sample.controls)}")
        controls = [open_rgb(path) for path in sample.controls]
        prompt_images, _ = condition_inputs(pipe, controls, max_pixels, condition_pixels)
        negative = negative_prompt_for(cfg, None)
        reference = open_rgb(sample.target) if sample.target else None
        previews.append(Preview(controls, reference, encode_prompt(pipe, sample.instruction, prompt_images),
                                None if negative is None else encode_prompt(pipe, negative, prompt_images),
                                default_size(max_pixels, [c.size for c in controls])))
    return previews


def render(pipe, preview: Preview, *, steps: int, cfg: float, seed: int, max_pixels: int,
           condition_pixels: int | None) -> Image.Image:
    kwargs = call_arguments(family_of(pipe), preview.controls, preview.prompt, negative=preview.negative, cfg=cfg,
                            steps=steps, size=preview.size, seed=seed)
    return run_call(pipe, kwargs, max_pixels=max_pixels, condition_pixels=condition_pixels)


def grid(images: list[Image.Image], height: int) -> Image.Image:
    """Images side by side at one height: controls, the preview, the reference."""
    scaled = [im.resize((max(1, round(im.width * height / im.height)), height)) for im in images]
    sheet = Image.new("RGB", (sum(im.width for im in scaled) + 4 * (len(scaled) - 1), height), "white")
    x = 0
    for im in scaled:
        sheet.paste(im, (x, 0))
        x += im.width + 4
    return sheet


def run_validation(pipe, previews: list[Preview], folder: Path, *, steps: int, cfg: float, seed: int,
                   max_pixels: int, condition_pixels: int | None) -> list[Image.Image]:
    """Render every preview into `folder` as `N.png` (the image) and `N-grid.png` (beside inputs and reference)."""
    folder.mkdir(parents=True, exist_ok=True)
    sheets = []
    for i, preview in enumerate(previews):
        image = render(pipe, preview, steps=steps, cfg=cfg, seed=seed, max_pixels=max_pixels,
                       condition_pixels=condition_pixels)
        image.save(folder / f"{i}.png")
        row = [*preview.controls, image] + ([preview.reference] if preview.reference else [])
        sheets.append(grid(row, image.height))
        sheets[-1].save(folder / f"{i}-grid.png")
    return sheets
