"""Previews during training: the validation samples rendered with the in-training LoRA.

Prompt embeddings of the previews are computed once, before the text encoder leaves the GPU; each
preview is then the pipeline call `editforge.generate` makes too (`editforge.inference.call`: sizes, negative
prompt, seed), with those embeddings, so a preview is what a user gets from `editforge edit --lora` with the
saved file.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from editforge.images import open_rgb
from editforge.inference.call import Prompt, call_arguments, run_call
from editforge.inference.options import GenerationOptions
from editforge.inference.sizes import default_size
from editforge.models import lightning
from editforge.models.info import family_of, model_info
from editforge.models.lora import LoraSpec, load_lora
from editforge.quiet import quiet_adapter_loading
from editforge.train.cache import condition_inputs, encode_prompt
from editforge.train.lora import ADAPTER

LIGHTNING_ADAPTER = "lightning"


@dataclass
class Preview:
    controls: list[Image.Image]
    reference: Image.Image | None
    instruction: str
    prompt: Prompt  # (embeds, mask) from the pipeline's encode_prompt
    negative: Prompt | None
    size: tuple[int, int]


def add_lightning(pipe, path: Path) -> None:
    """Load the Lightning LoRA beside the trained one (peft adapter "lightning"), inactive: `lightning_on` switches
    it on for previews only. Loaded before the optimizer and accelerate see the model, so they never see it."""
    with quiet_adapter_loading():
        load_lora(pipe, LoraSpec(path), LIGHTNING_ADAPTER)
    # peft puts a new adapter on its base layer's device, which in a swapped block (train.blocks_to_swap) is the
    # CPU; like the trained LoRA it belongs on the compute device (that of img_in, which is never swapped)
    device = next(pipe.transformer.parameters()).device
    for name, param in pipe.transformer.named_parameters():
        if f".{LIGHTNING_ADAPTER}." in name:
            param.data = param.data.to(device)
    # peft's set_adapter makes the active adapters' weights trainable and the others frozen
    pipe.transformer.set_adapters([ADAPTER])


@contextlib.contextmanager
def lightning_on(pipe, steps: int | None):
    """Previews as `editforge edit --lightning N --lora trained` makes them: both LoRAs, the distillation scheduler."""
    if not steps:
        yield
        return
    scheduler = pipe.scheduler
    pipe.scheduler = lightning.scheduler()
    pipe.transformer.set_adapters([ADAPTER, LIGHTNING_ADAPTER])
    try:
        yield
    finally:
        pipe.transformer.set_adapters([ADAPTER])
        pipe.scheduler = scheduler


def preview_options(pipe, *, steps: int, cfg: float, max_pixels: int, condition_pixels: int | None):
    """The options of a preview's pipeline call, resolved as `editforge.generate` resolves them."""
    return GenerationOptions(steps=steps, cfg=cfg, max_pixels=max_pixels,
                             condition_pixels=condition_pixels).resolved(model_info(pipe))


@torch.no_grad()
def prepare_previews(pipe, samples, options: GenerationOptions) -> list[Preview]:
    """The previews of `samples` at the (resolved) `options`, their prompts encoded."""
    previews = []
    for sample in samples:  # their control counts were checked before the model loaded (Config.check_family)
        controls = [open_rgb(path) for path in sample.controls]
        prompt_images, _ = condition_inputs(pipe, controls, options.max_pixels, options.condition_pixels)
        negative = options.negative_prompt
        reference = open_rgb(sample.target) if sample.target else None
        previews.append(Preview(controls, reference, sample.instruction,
                                encode_prompt(pipe, sample.instruction, prompt_images),
                                None if negative is None else encode_prompt(pipe, negative, prompt_images),
                                default_size(options.max_pixels, [c.size for c in controls])))
    return previews


def render(pipe, preview: Preview, options: GenerationOptions, *, seed: int) -> Image.Image:
    kwargs = call_arguments(family_of(pipe), preview.controls, preview.prompt, options, size=preview.size, seed=seed,
                            negative=preview.negative)
    return run_call(pipe, kwargs, options)


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


def run_validation(pipe, previews: list[Preview], folder: Path, options: GenerationOptions, *,
                   seed: int) -> tuple[list[Image.Image], list[Image.Image]]:
    """Render every preview into `folder` as `N.png` (the image) and `N-grid.png` (beside inputs and reference,
    each labelled); returns the grids and the images."""
    folder.mkdir(parents=True, exist_ok=True)
    sheets, images = [], []
    for i, preview in enumerate(previews):
        image = render(pipe, preview, options, seed=seed)
        images.append(image)
        image.save(folder / f"{i}.png")
        row = [*preview.controls, image] + ([preview.reference] if preview.reference else [])
        labels = [f"control {k}" for k in range(1, len(preview.controls) + 1)] + ["preview"] + \
            (["reference"] if preview.reference else [])
        sheets.append(grid(row, image.height, labels))
        sheets[-1].save(folder / f"{i}-grid.png")
    return sheets, images


def judge_previews(judge, previews: list[Preview], images: list[Image.Image]) -> list[float]:
    """The judge's score of each preview as an edit of its controls by its instruction (`editforge.judge`)."""
    from editforge.judge.ask import Pair, score_pairs

    return score_pairs(judge, [Pair(tuple(p.controls), image, p.instruction) for p, image in zip(previews, images)])
