"""Image sizes: the area rules of the Qwen-Image pipelines, with the areas as knobs.

diffusers hard-codes the areas (1 MP for the output/VAE; 384x384 for Edit-2509's VL encoder, as module
constants). EditForge keeps the same rules and lets the areas vary, for speed and for tests; with the
defaults the sizes are exactly diffusers'.
"""

from __future__ import annotations

import contextlib
import math
import threading

# Qwen-Image's text-to-image resolutions (from its model card).
ASPECT_RATIOS = {
    "1:1": (1328, 1328),
    "16:9": (1664, 928),
    "9:16": (928, 1664),
    "4:3": (1472, 1104),
    "3:4": (1104, 1472),
    "3:2": (1584, 1056),
    "2:3": (1056, 1584),
}
DIFFUSERS_VAE_PIXELS = 1024 * 1024
# The smallest areas EditForge accepts. Smaller output areas give sides of 32 px or less (0 for a wide
# image), and a side length typed where an area is meant (`--max-pixels 1024`) lands below this.
MIN_PIXELS = 64 * 64
MIN_CONDITION_PIXELS = 56 * 56  # Qwen2-VL's processor enlarges anything smaller to this anyway
_lock = threading.Lock()


def dimensions_for_area(area: int, ratio: float) -> tuple[int, int]:
    """(width, height) with about `area` pixels at `ratio`, sides multiples of 32 (diffusers' rule)."""
    width = math.sqrt(area * ratio)
    height = width / ratio
    return round(width / 32) * 32, round(height / 32) * 32


# Qwen2-VL's image processor refuses a picture whose long side is 200 times its short side or more.
VL_MAX_ASPECT = 200


def size_problem(size: tuple[int, int], areas: dict[str, int]) -> str | None:
    """Why a picture of `size` cannot go through the pipelines at `areas` ({"output": pixels, ...}): a side
    that rounds to nothing, or an aspect the VL encoder refuses. None when it can; the text says the limit."""
    width, height = size
    for name, area in areas.items():
        w, h = dimensions_for_area(area, width / height)
        if min(w, h) < 32 or max(w, h) / min(w, h) >= VL_MAX_ASPECT:
            longest = min(VL_MAX_ASPECT - 1, int(area / 17**2))  # a short side of 17 px still rounds up to 32
            return (f"a {width}x{height} picture (aspect {max(width, height) / min(width, height):.0f}:1) does not fit: "
                    f"at the {name} area of {area} pixels the model takes aspect ratios up to about {longest}:1 "
                    "(crop it)")
    return None


def output_size(area: int, reference: tuple[int, int], multiple_of: int = 16) -> tuple[int, int]:
    width, height = dimensions_for_area(area, reference[0] / reference[1])
    return width // multiple_of * multiple_of, height // multiple_of * multiple_of


def default_size(max_pixels: int, image_sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """The output size a pipeline picks: the last input image's aspect ratio at `max_pixels`, square without inputs."""
    return output_size(max_pixels, image_sizes[-1]) if image_sizes else aspect_size("1:1", max_pixels)


def aspect_size(aspect: str, area: int | None = None) -> tuple[int, int]:
    """A text-to-image size: the model card's table at full size, the same ratio at another `area`."""
    width, height = ASPECT_RATIOS[aspect]
    if area is None or area == ASPECT_RATIOS["1:1"][0] ** 2:
        return width, height
    # Multiples of 16, what the pipeline needs (8x VAE, 2x2 patches): rounding to 32 as the edit rule does
    # bends 16:9 into 3:1 at a tiny model's 64x64 area.
    exact_width = math.sqrt(area * width / height)
    return round(exact_width / 16) * 16, round(exact_width * height / width / 16) * 16


@contextlib.contextmanager
def pipeline_areas(pipe, *, vae_pixels: int, condition_pixels: int | None):
    """Run a diffusers Qwen-Image Edit pipeline with other areas than its hard-coded ones.

    Edit-2509 reads the module constants CONDITION_IMAGE_SIZE / VAE_IMAGE_SIZE; Edit v1 calls
    calculate_dimensions(1024 * 1024, ...) for both encoders. Both are swapped for the call, under a lock.
    """
    import sys

    module = sys.modules[type(pipe).__module__]
    saved = {name: getattr(module, name) for name in ("CONDITION_IMAGE_SIZE", "VAE_IMAGE_SIZE", "calculate_dimensions")
             if hasattr(module, name)}
    with _lock:
        try:
            if "VAE_IMAGE_SIZE" in saved:
                module.VAE_IMAGE_SIZE = vae_pixels
                module.CONDITION_IMAGE_SIZE = condition_pixels
            elif "calculate_dimensions" in saved and vae_pixels != DIFFUSERS_VAE_PIXELS:
                original = saved["calculate_dimensions"]
                module.calculate_dimensions = lambda area, ratio: original(
                    vae_pixels if area == DIFFUSERS_VAE_PIXELS else area, ratio
                )
            yield
        finally:
            for name, value in saved.items():
                setattr(module, name, value)
