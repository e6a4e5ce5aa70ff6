"""A loaded pipeline as the generator `editforge synth` is given (see `editforge.sheet.synth`).

    generator = PipelineGenerator(load_pipeline("qwen-image-edit-2509", lightning=8), steps=None)
    generator.check(images, prompt)            # cheap: the tokenizer and the sizes, no model work
    image, params = generator(images, prompt, seed)
"""

from __future__ import annotations

from typing import Any, Sequence

from PIL import Image

from editforge.inference.generate import check_request, generate


class PipelineGenerator:
    def __init__(self, pipe, **gen: Any):
        """`gen`: generate()'s options (steps, cfg, negative_prompt, max_pixels, condition_pixels)."""
        self.pipe, self.gen = pipe, gen

    def check(self, images: Sequence[Image.Image], prompt: str) -> None:
        """Raise `EditForgeError` for input this model cannot take (see `check_request`)."""
        check_request(self.pipe, [img.size for img in images], prompt, max_pixels=self.gen.get("max_pixels"),
                      condition_pixels=self.gen.get("condition_pixels"))

    def __call__(self, images: Sequence[Image.Image], prompt: str, seed: int) -> tuple[Image.Image, dict[str, Any]]:
        return generate(self.pipe, images, prompt, seed=seed, **self.gen)
