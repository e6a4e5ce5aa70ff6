"""Requests in, images out: `generate` (image + its parameters), `edit`, `text_to_image`.

Every knob (`GenerationOptions`) defaults to `None`, meaning "what the loaded model and its Lightning
setting say", so a caller never has to remember that Lightning wants cfg 1.0 or that EditPlus reads 384x384
conditions.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Sequence

from PIL import Image

from editforge.errors import EditForgeError
from editforge.inference.call import call_arguments, run_call
from editforge.inference.options import POSITIVE_MAGIC, GenerationOptions
from editforge.inference.sizes import aspect_size, default_size, size_problem
from editforge.models.info import model_info
from editforge.models.options import with_overrides
from editforge.models.registry import Family, count_text

log = logging.getLogger("editforge")


class NegativePromptIgnored(UserWarning):
    """cfg <= 1 turns classifier-free guidance off, so a negative prompt changes nothing."""


def check_image_count(family: Family, count: int) -> None:
    if count in family.image_counts:
        return
    if not family.is_edit:
        raise EditForgeError(f"{family.name} is text-to-image; it takes no input images "
                             "(to edit, use `editforge edit` with an edit model such as qwen-image-edit-2509)")
    hint = (": it is an edit model, use `editforge edit` (text-to-image needs a Qwen-Image model, "
            "e.g. `model=qwen-image`)") if count == 0 else ""
    raise EditForgeError(f"{family.name} takes {count_text(family.image_counts, 'input image')}, got {count}{hint}")


def check_steps(family: Family, steps: int, scheduler_config) -> None:
    if steps < 1:
        raise EditForgeError(f"`steps` must be 1 or more, not {steps}")
    if steps < 2 and scheduler_config.get("shift_terminal"):
        # diffusers divides by (1 - last sigma) to stretch the schedule: with one step that is 0/0 -> NaN
        raise EditForgeError(f"{family.name}'s own scheduler needs at least 2 steps (got {steps}); "
                             "1-step generation needs a distilled (Lightning) scheduler")


def check_load_request(plan, *, images: list[int], options: GenerationOptions | None = None) -> None:
    """What `generate` would refuse, checked against a `LoadPlan` before the model loads: `images` holds
    each job's number of input images."""
    options = options or GenerationOptions()
    for count in sorted(set(images)):
        check_image_count(plan.family, count)
    check_steps(plan.family, options.steps or plan.info().default_steps, plan.scheduler_config())
    options.check(plan.family)


def generate(pipe, images: Sequence[Image.Image], prompt: str, *, seed: int,
             options: GenerationOptions | None = None, width: int | None = None, height: int | None = None,
             **overrides) -> tuple[Image.Image, dict[str, Any]]:
    """One image from `images` (none for text-to-image) and `prompt`; returns it with its parameters.
    `options` (or the same as keyword arguments, e.g. `steps=8`): `GenerationOptions`."""
    options = with_overrides(GenerationOptions, options, overrides)
    info = model_info(pipe)
    family = info.family
    images = list(images)
    options.check(family)
    check_request(pipe, [img.size for img in images], prompt, options)
    run = options.resolved(info)
    check_steps(family, run.steps, pipe.scheduler.config)
    if options.negative_prompt and run.cfg <= 1:
        warnings.warn(
            f"cfg {run.cfg:g} turns classifier-free guidance off, so the negative prompt does nothing "
            "(Lightning LoRAs are distilled for cfg 1.0)",
            NegativePromptIgnored,
            stacklevel=2,
        )
    if width is None or height is None:
        width, height = default_size(run.max_pixels, [img.size for img in images])
    image = run_call(pipe, call_arguments(family, images, prompt, run, size=(width, height), seed=seed), run)

    params = {
        "model": info.model,
        "family": family.name,
        "loras": list(info.loras),
        "lightning": info.lightning,
        "seed": seed,
        "steps": run.steps,
        "cfg": run.cfg,
        "prompt": prompt,
        "negative_prompt": run.negative_prompt,
        "width": image.width,
        "height": image.height,
        "max_pixels": run.max_pixels,
        "condition_pixels": run.condition_pixels,
        "input_sizes": [list(img.size) for img in images],
        "quantize": info.quantize,
        **({"files": dict(info.files)} if info.files else {}),
    }
    return image, params


def check_request(pipe, sizes: Sequence[tuple[int, int]], prompt: str,
                  options: GenerationOptions | None = None) -> None:
    """Refuse, before any model work, a request the pipeline cannot take: the wrong number of images,
    an empty prompt, an edit prompt longer than the text encoder reads (the Edit pipelines do not
    truncate; 1024 tokens, their `tokenizer_max_length`), a picture whose aspect ratio rounds a side
    to nothing at the areas the pipeline resizes it to. Each is an `EditForgeError` saying the limit."""
    info = model_info(pipe)
    family = info.family
    check_image_count(family, len(sizes))
    if not prompt or not prompt.strip():
        raise EditForgeError("the prompt is empty")
    if not family.is_edit:
        return  # the text-to-image pipeline truncates a long prompt to its tokenizer_max_length itself
    limit = getattr(pipe, "tokenizer_max_length", 1024)
    tokens = len(pipe.tokenizer(prompt)["input_ids"])
    if tokens > limit:
        raise EditForgeError(f"the prompt is {tokens} tokens; {family.name} reads at most {limit} (shorten it)")
    run = (options or GenerationOptions()).resolved(info)
    areas = {"output": run.max_pixels}
    if run.condition_pixels:  # EditPlus: every input also goes to the VL encoder at its own area
        areas["condition"] = run.condition_pixels
    for size in sizes:
        problem = size_problem(size, areas)
        if problem is not None:
            raise EditForgeError(f"{family.name}: {problem}")


def edit(pipe, images: Image.Image | Sequence[Image.Image], prompt: str, *, seed: int, **options) -> Image.Image:
    """Edit one image, or (EditPlus) combine up to three, following `prompt`; `options` as `generate`'s."""
    if isinstance(images, Image.Image):
        images = [images]
    return generate(pipe, images, prompt, seed=seed, **options)[0]


def text_to_image(pipe, prompt: str, *, seed: int, aspect: str = "1:1", magic: str | None = None,
                  options: GenerationOptions | None = None, **overrides) -> tuple[Image.Image, dict[str, Any]]:
    """Qwen-Image text-to-image at one of its aspect ratios, optionally with the model card's positive magic."""
    options = with_overrides(GenerationOptions, options, overrides)
    info = model_info(pipe)
    options.check(info.family)
    width, height = aspect_size(aspect, options.max_pixels or info.max_pixels)
    if magic:
        prompt = prompt + POSITIVE_MAGIC[magic]
    return generate(pipe, [], prompt, seed=seed, options=options, width=width, height=height)
