"""Previews during training: the validation samples rendered with the in-training LoRA.

Prompt embeddings of the previews are computed once, before the text encoder leaves the GPU; each
preview is then the inference pipeline's own call with those embeddings, at the sizes `editforge.generate`
would use, so a preview is what a user will get from `editforge edit --lora` with the saved file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from editforge.images import open_rgb
from editforge.inference.sizes import aspect_size, output_size, pipeline_areas
from editforge.models.registry import FAMILY_BY_PIPELINE
from editforge.train.cache import condition_inputs, encode_prompt

NEGATIVE_PROMPT = " "  # what `editforge.generate` uses when cfg > 1 and no negative prompt is given


@dataclass
class Preview:
    controls: list[Image.Image]
    reference: Image.Image | None
    prompt: tuple[torch.Tensor, torch.Tensor]  # (embeds, mask) from the pipeline's encode_prompt
    negative: tuple[torch.Tensor, torch.Tensor] | None
    size: tuple[int, int]


@torch.no_grad()
def prepare_previews(pipe, samples, *, cfg: float, max_pixels: int, condition_pixels: int | None) -> list[Preview]:
    previews = []
    for sample in samples:  # their control counts were checked before the model loaded (Config.check_family)
        controls = [open_rgb(path) for path in sample.controls]
        prompt_images, _ = condition_inputs(pipe, controls, max_pixels, condition_pixels)
        negative = encode_prompt(pipe, NEGATIVE_PROMPT, prompt_images) if cfg > 1 else None
        size = output_size(max_pixels, controls[-1].size) if controls else aspect_size("1:1", max_pixels)
        reference = open_rgb(sample.target) if sample.target else None
        previews.append(Preview(controls, reference, encode_prompt(pipe, sample.instruction, prompt_images),
                                negative, size))
    return previews


@torch.no_grad()
def render(pipe, preview: Preview, *, steps: int, cfg: float, seed: int, max_pixels: int,
           condition_pixels: int | None) -> Image.Image:
    family = FAMILY_BY_PIPELINE[type(pipe).__name__]
    kwargs = dict(
        prompt_embeds=preview.prompt[0], prompt_embeds_mask=preview.prompt[1], true_cfg_scale=cfg,
        num_inference_steps=steps, width=preview.size[0], height=preview.size[1],
        generator=torch.Generator("cpu").manual_seed(seed),
    )
    if preview.negative is not None:
        kwargs.update(negative_prompt_embeds=preview.negative[0], negative_prompt_embeds_mask=preview.negative[1])
    if family.is_edit:
        kwargs["image"] = preview.controls if family.max_images > 1 else preview.controls[0]
    with pipeline_areas(pipe, vae_pixels=max_pixels, condition_pixels=condition_pixels):
        return pipe(**kwargs).images[0]


LABEL_HEIGHT = 14  # the strip under each picture that says what it is


def grid(images: list[Image.Image], height: int, labels: list[str]) -> Image.Image:
    """Images side by side at one height, each labelled underneath: controls, the preview, the reference."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    scaled = [im.resize((max(1, round(im.width * height / im.height)), height)) for im in images]
    slots = [max(im.width, round(measure.textlength(label, font=font)) + 4) for im, label in zip(scaled, labels)]
    sheet = Image.new("RGB", (sum(slots) + 4 * (len(slots) - 1), height + LABEL_HEIGHT), "white")
    draw = ImageDraw.Draw(sheet)
    x = 0
    for im, label, slot in zip(scaled, labels, slots):
        sheet.paste(im, (x, 0))
        draw.text((x + 2, height + 1), label, fill="black", font=font)
        x += slot + 4
    return sheet


def run_validation(pipe, previews: list[Preview], folder: Path, *, steps: int, cfg: float, seed: int,
                   max_pixels: int, condition_pixels: int | None) -> list[Image.Image]:
    """Render every preview into `folder` as `N.png` (the image) and `N-grid.png` (beside inputs and reference,
    each labelled)."""
    folder.mkdir(parents=True, exist_ok=True)
    sheets = []
    for i, preview in enumerate(previews):
        image = render(pipe, preview, steps=steps, cfg=cfg, seed=seed, max_pixels=max_pixels,
                       condition_pixels=condition_pixels)
        image.save(folder / f"{i}.png")
        row = [*preview.controls, image] + ([preview.reference] if preview.reference else [])
        labels = [f"control {k}" for k in range(1, len(preview.controls) + 1)] + ["preview"] + \
            (["reference"] if preview.reference else [])
        sheets.append(grid(row, image.height, labels))
        sheets[-1].save(folder / f"{i}-grid.png")
    return sheets
