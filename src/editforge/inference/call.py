"""The diffusers pipeline call, built in one place for everyone who generates: `editforge.generate`, training
previews and the benchmarks.

Besides the prompt, what goes into the call is either a family rule (one `image` or a list of `image`s, how
many text tokens the call keeps) or a default of the model cards (true CFG with a `" "` negative prompt).
Built once, a preview rendered during training is the same call as the image `editforge edit --lora` makes
from the saved LoRA.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import torch
from PIL import Image

from editforge.inference.sizes import pipeline_areas
from editforge.models.registry import Family

NEGATIVE_PROMPT = " "  # the model cards' negative prompt; diffusers runs true CFG only with some negative prompt

# A prompt is text, or what the pipeline's `encode_prompt` made of it: (embeds, mask or None).
Prompt = Union[str, tuple[torch.Tensor, Union[torch.Tensor, None]]]


def negative_prompt_for(cfg: float, given: str | None) -> str | None:
    """The negative prompt a call runs with: none when cfg <= 1 (guidance is off), else `given` or `" "`."""
    if cfg <= 1:
        return None
    return NEGATIVE_PROMPT if given is None else given


def call_arguments(family: Family, images: Sequence[Image.Image], prompt: Prompt, *, negative: Prompt | None,
                   cfg: float, steps: int, size: tuple[int, int], seed: int) -> dict[str, Any]:
    """The keyword arguments of `pipe(...)` for one image; `negative` comes from `negative_prompt_for`."""
    width, height = size
    kwargs: dict[str, Any] = {
        **_text("prompt", prompt),
        "true_cfg_scale": cfg,
        "num_inference_steps": steps,
        "width": width,
        "height": height,
        "generator": torch.Generator("cpu").manual_seed(seed),
    }
    if negative is not None:
        kwargs |= _text("negative_prompt", negative)
    if family.prompt_max_tokens is not None:
        kwargs["max_sequence_length"] = family.prompt_max_tokens
    if family.is_edit:
        kwargs["image"] = list(images) if family.takes_image_list else images[0]
    return kwargs


def _text(name: str, prompt: Prompt) -> dict[str, Any]:
    if isinstance(prompt, str):
        return {name: prompt}
    embeds, mask = prompt
    return {f"{name}_embeds": embeds, f"{name}_embeds_mask": mask}


def run_call(pipe, kwargs: dict[str, Any], *, max_pixels: int, condition_pixels: int | None) -> Image.Image:
    """`pipe(**kwargs)` at EditForge's areas (see `pipeline_areas`)."""
    with torch.inference_mode(), pipeline_areas(pipe, vae_pixels=max_pixels, condition_pixels=condition_pixels):
        return pipe(**kwargs).images[0]
