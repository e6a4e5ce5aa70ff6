"""Requests in, images out: `generate` (image + its parameters), `edit`, `text_to_image`.

Every knob defaults to `None`, meaning "what the loaded model and its Lightning setting say", so a
caller never has to remember that Lightning wants cfg 1.0 or that Edit-2509 reads 384x384 conditions.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Sequence

from PIL import Image

from editforge.errors import EditForgeError
from editforge.inference.call import call_arguments, negative_prompt_for, run_call
from editforge.inference.sizes import MIN_CONDITION_PIXELS, MIN_PIXELS, aspect_size, default_size, size_problem
from editforge.models.registry import Family, count_text, family_of

POSITIVE_MAGIC = {"en": ", Ultra HD, 4K, cinematic composition.", "zh": ", 超清，4K，电影级构图."}
log = logging.getLogger("editforge")


class NegativePromptIgnored(UserWarning):
    """cfg <= 1 turns classifier-free guidance off, so a negative prompt changes nothing."""


def pipeline_info(pipe) -> dict[str, Any]:
    """`pipe.editforge_info`, or family defaults for a pipeline built by hand."""
    info = getattr(pipe, "editforge_info", None)
    if info is not None:
        return info
    family = family_of(pipe)
    return {
        "model": family.hub_id, "family": family.name, "max_pixels": family.max_pixels,
        "condition_pixels": family.condition_pixels, "loras": [], "default_steps": family.steps,
        "default_cfg": family.cfg,
    }


def check_image_count(family: Family, count: int) -> None:
    if count in family.image_counts:
        return
    if not family.is_edit:
        raise EditForgeError(f"{family.name} is text-to-image; it takes no input images "
                             "(to edit, use `editforge edit` with an edit model such as qwen-image-edit-2509)")
    hint = (": it is an edit model, use `editforge edit` (text-to-image needs a Qwen-Image model, "
            "e.g. --model qwen-image)") if count == 0 else ""
    raise EditForgeError(f"{family.name} takes {count_text(family.image_counts, 'input image')}, got {count}{hint}")


def check_steps(family: Family, steps: int, scheduler_config) -> None:
    if steps < 1:
        raise EditForgeError(f"--steps must be 1 or more, not {steps}")
    if steps < 2 and scheduler_config.get("shift_terminal"):
        # diffusers divides by (1 - last sigma) to stretch the schedule: with one step that is 0/0 -> NaN
        raise EditForgeError(f"{family.name}'s own scheduler needs at least 2 steps (got {steps}); "
                             "1-step generation needs a distilled (Lightning) scheduler")


def check_areas(family: Family, max_pixels: int | None, condition_pixels: int | None) -> None:
    """The areas a caller asked for (None: the model's default)."""
    if max_pixels is not None and max_pixels < MIN_PIXELS:
        raise EditForgeError(f"--max-pixels is an area in pixels (width x height, e.g. {1024 * 1024} for 1024x1024); "
                             f"{max_pixels} is below the smallest EditForge draws, {MIN_PIXELS} (64x64)")
    if condition_pixels is not None and not family.condition_pixels:
        raise EditForgeError(
            f"--condition-pixels applies to Edit-2509 only; {family.name} feeds one image size to both encoders"
        )
    if condition_pixels is not None and condition_pixels < MIN_CONDITION_PIXELS:
        raise EditForgeError(f"--condition-pixels is an area in pixels (e.g. {384 * 384} for 384x384); "
                             f"{condition_pixels} is below the vision encoder's minimum, {MIN_CONDITION_PIXELS} (56x56)")


def check_load_request(plan, *, images: list[int], steps: int | None = None, max_pixels: int | None = None,
                       condition_pixels: int | None = None, **_) -> None:
    """What `generate` would refuse, checked against a `LoadPlan` before the model loads: `images` holds
    each job's number of input images."""
    for count in sorted(set(images)):
        check_image_count(plan.family, count)
    check_steps(plan.family, steps or plan.default_steps, plan.scheduler_config())
    check_areas(plan.family, max_pixels, condition_pixels)


def generate(
    pipe,
    images: Sequence[Image.Image],
    prompt: str,
    *,
    seed: int,
    steps: int | None = None,
    cfg: float | None = None,
    negative_prompt: str | None = None,
    max_pixels: int | None = None,
    condition_pixels: int | None = None,
    width: int | None = None,
    height: int | None = None,
) -> tuple[Image.Image, dict[str, Any]]:
    """One image from `images` (none for text-to-image) and `prompt`; returns it with its parameters."""
    info = pipeline_info(pipe)
    family = family_of(pipe)
    images = list(images)
    check_areas(family, max_pixels, condition_pixels)
    check_request(pipe, [img.size for img in images], prompt, max_pixels=max_pixels,
                  condition_pixels=condition_pixels)
    steps = steps or info["default_steps"]
    check_steps(family, steps, pipe.scheduler.config)
    cfg = info["default_cfg"] if cfg is None else cfg
    max_pixels = max_pixels or info["max_pixels"]
    condition_pixels = condition_pixels or info["condition_pixels"]
    if negative_prompt and cfg <= 1:
        warnings.warn(
            f"cfg {cfg:g} turns classifier-free guidance off, so the negative prompt does nothing "
            "(Lightning LoRAs are distilled for cfg 1.0)",
            NegativePromptIgnored,
            stacklevel=2,
        )
    negative_prompt = negative_prompt_for(cfg, negative_prompt)

    if width is None or height is None:
        width, height = default_size(max_pixels, [img.size for img in images])
    kwargs = call_arguments(family, images, prompt, negative=negative_prompt, cfg=cfg, steps=steps,
                            size=(width, height), seed=seed)
    image = run_call(pipe, kwargs, max_pixels=max_pixels, condition_pixels=condition_pixels)

    params = {
        "model": info["model"],
        "family": info["family"],
        "loras": info["loras"],
        "lightning": info.get("lightning"),
        "seed": seed,
        "steps": steps,
        "cfg": cfg,
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "width": image.width,
        "height": image.height,
        "max_pixels": max_pixels,
        "condition_pixels": condition_pixels if family.condition_pixels else None,
        "input_sizes": [list(img.size) for img in images],
        "quantize": info.get("quantize"),
    }
    return image, params


def check_request(pipe, sizes: Sequence[tuple[int, int]], prompt: str, *, max_pixels: int | None = None,
                  condition_pixels: int | None = None) -> None:
    """Refuse, before any model work, a request the pipeline cannot take: the wrong number of images,
    an empty prompt, an edit prompt longer than the text encoder reads (the Edit pipelines do not
    truncate; 1024 tokens, their `tokenizer_max_length`), a picture whose aspect ratio rounds a side
    to nothing at the areas the pipeline resizes it to. Each is an `EditForgeError` saying the limit."""
    info = pipeline_info(pipe)
    family = family_of(pipe)
    check_image_count(family, len(sizes))
    if not prompt or not prompt.strip():
        raise EditForgeError("the prompt is empty")
    if not family.is_edit:
        return  # the text-to-image pipeline truncates a long prompt to its tokenizer_max_length itself
    limit = getattr(pipe, "tokenizer_max_length", 1024)
    tokens = len(pipe.tokenizer(prompt)["input_ids"])
    if tokens > limit:
        raise EditForgeError(f"the prompt is {tokens} tokens; {family.name} reads at most {limit} (shorten it)")
    areas = {"output": max_pixels or info["max_pixels"]}
    if family.condition_pixels:  # Edit-2509: every input also goes to the VL encoder at its own area
        areas["condition"] = condition_pixels or info["condition_pixels"]
    for size in sizes:
        problem = size_problem(size, areas)
        if problem is not None:
            raise EditForgeError(f"{family.name}: {problem}")


def edit(pipe, images: Image.Image | Sequence[Image.Image], prompt: str, *, seed: int, **options) -> Image.Image:
    """Edit one image, or (Edit-2509) combine up to three, following `prompt`."""
    if isinstance(images, Image.Image):
        images = [images]
    return generate(pipe, images, prompt, seed=seed, **options)[0]


def text_to_image(
    pipe, prompt: str, *, seed: int, aspect: str = "1:1", magic: str | None = None, **options
) -> tuple[Image.Image, dict[str, Any]]:
    """Qwen-Image text-to-image at one of its aspect ratios, optionally with the model card's positive magic."""
    info = pipeline_info(pipe)
    max_pixels = options.pop("max_pixels", None)
    check_areas(family_of(pipe), max_pixels, None)
    width, height = aspect_size(aspect, max_pixels or info["max_pixels"])
    if magic:
        prompt = prompt + POSITIVE_MAGIC[magic]
    return generate(pipe, [], prompt, seed=seed, width=width, height=height, max_pixels=max_pixels, **options)
