"""`GenerationOptions`: the knobs of one generation, as one typed value. `None` is "the model's default".

    options = GenerationOptions(steps=8, max_pixels=768 * 768)
    image, params = generate(pipe, images, prompt, seed=0, options=options)   # or generate(..., steps=8)

`resolved(info)` fills in what the loaded model says (`ModelInfo`: the family's defaults, or Lightning's
steps and cfg 1.0), so a caller never has to remember that Lightning wants cfg 1.0 or that EditPlus reads
384x384 conditions.
"""

from __future__ import annotations

from dataclasses import dataclass

from editforge.errors import EditForgeError
from editforge.inference.sizes import MIN_CONDITION_PIXELS, MIN_PIXELS
from editforge.models.info import ModelInfo
from editforge.models.registry import FAMILIES, Family

# Text-to-image: the model card's "positive magic", appended to a prompt on request.
POSITIVE_MAGIC = {"en": ", Ultra HD, 4K, cinematic composition.", "zh": ", 超清，4K，电影级构图."}


@dataclass(frozen=True)
class GenerationOptions:
    steps: int | None = None  # denoising steps
    cfg: float | None = None  # true CFG scale; 1 or less turns guidance (and the negative prompt) off
    negative_prompt: str | None = None  # default: the family's (" "); resolved: None when guidance is off
    max_pixels: int | None = None  # output / VAE area in pixels
    condition_pixels: int | None = None  # EditPlus: the VL-encoder area per input image

    def check(self, family: Family) -> None:
        """The areas asked for: areas in pixels the model can draw at, and a condition area only for EditPlus."""
        if self.max_pixels is not None and self.max_pixels < MIN_PIXELS:
            raise EditForgeError(f"`max_pixels` is an area in pixels (width x height, e.g. {1024 * 1024} for "
                                 f"1024x1024); {self.max_pixels} is below the smallest EditForge draws, {MIN_PIXELS} "
                                 "(64x64)")
        if self.condition_pixels is not None and not family.condition_pixels:
            takers = ", ".join(f.name for f in FAMILIES.values() if f.condition_pixels)
            raise EditForgeError(f"`condition_pixels` applies only to {takers}; {family.name} feeds one image size "
                                 "to both encoders")
        if self.condition_pixels is not None and self.condition_pixels < MIN_CONDITION_PIXELS:
            raise EditForgeError(f"`condition_pixels` is an area in pixels (e.g. {384 * 384} for 384x384); "
                                 f"{self.condition_pixels} is below the vision encoder's minimum, "
                                 f"{MIN_CONDITION_PIXELS} (56x56)")

    def resolved(self, info: ModelInfo) -> GenerationOptions:
        """Every knob as the pipeline call runs it: the model's defaults where none was given."""
        cfg = info.default_cfg if self.cfg is None else self.cfg
        return GenerationOptions(
            steps=self.steps or info.default_steps,
            cfg=cfg,
            negative_prompt=negative_prompt_for(info.family, cfg, self.negative_prompt),
            max_pixels=self.max_pixels or info.max_pixels,
            condition_pixels=(self.condition_pixels or info.condition_pixels) if info.family.condition_pixels else None,
        )


def negative_prompt_for(family: Family, cfg: float, given: str | None) -> str | None:
    """The negative prompt a call runs with: none when cfg <= 1 (guidance is off), else `given` or the family's."""
    if cfg <= 1:
        return None
    return family.negative_prompt if given is None else given
