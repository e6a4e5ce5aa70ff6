"""The diffusers pipeline call, built in one place for everyone who generates: `editforge.generate` (and so
synth and the benchmarks), training previews, and whatever judges pictures next.

Besides the prompt, what goes into the call is a family rule (one `image` or a list of `image`s, how many
text tokens the call keeps) or a resolved `GenerationOptions` (steps, cfg, the negative prompt: the model
card's `" "` by default). Built once, a preview rendered during training is the same call as the image
`editforge edit --lora` makes from the saved LoRA.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

import torch
from PIL import Image

from editforge.inference.options import GenerationOptions
from editforge.inference.sizes import pipeline_areas
from editforge.models.registry import Family

# A prompt is text, or what the pipeline's `encode_prompt` made of it: (embeds, mask or None).
Prompt = Union[str, tuple[torch.Tensor, Union[torch.Tensor, None]]]


def call_arguments(family: Family, images: Sequence[Image.Image], prompt: Prompt, options: GenerationOptions, *,
                   size: tuple[int, int], seed: int, negative: Prompt | None = None) -> dict[str, Any]:
    """The keyword arguments of `pipe(...)` for one image at `options` (resolved: `GenerationOptions.resolved`).
    The negative prompt is the options' own, or `negative` in its place (embeddings computed once, as previews
    do) when guidance is on."""
    width, height = size
    if options.negative_prompt is None:
        negative = None
    elif negative is None:
        negative = options.negative_prompt
    kwargs: dict[str, Any] = {
        **_text("prompt", prompt),
        "true_cfg_scale": options.cfg,
        "num_inference_steps": options.steps,
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


def run_call(pipe, kwargs: dict[str, Any], options: GenerationOptions) -> Image.Image:
    """`pipe(**kwargs)` at the (resolved) options' areas (see `pipeline_areas`)."""
    with torch.inference_mode(), pipeline_areas(pipe, vae_pixels=options.max_pixels,
                                                condition_pixels=options.condition_pixels):
        return pipe(**kwargs).images[0]
