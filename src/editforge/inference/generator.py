"""A model as the generator `editforge synth` is given (see `editforge.sheet.synth`).

    make_generator, max_inputs = model_generator("qwen-image-edit-2509", LoadOptions(lightning=8))
    generator = make_generator()               # loads the pipeline
    generator.check(images, prompt)            # cheap: the tokenizer and the sizes, no model work
    image, params = generator(images, prompt, seed)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from PIL import Image

from editforge.errors import EditForgeError
from editforge.inference.generate import check_load_request, check_request, generate
from editforge.inference.options import GenerationOptions
from editforge.models.options import LoadOptions


class PipelineGenerator:
    def __init__(self, pipe, options: GenerationOptions | None = None):
        self.pipe, self.options = pipe, options or GenerationOptions()
        self._judge = None

    def judge(self):
        """The judge made of this pipeline's own text encoder: the same module, no second model
        (`editforge.judge.judge_from_pipeline`)."""
        if self._judge is None:
            from editforge.judge.model import judge_from_pipeline

            self._judge = judge_from_pipeline(self.pipe)
        return self._judge

    def check(self, images: Sequence[Image.Image], prompt: str) -> None:
        """Raise `EditForgeError` for input this model cannot take (see `check_request`)."""
        check_request(self.pipe, [img.size for img in images], prompt, self.options)

    def __call__(self, images: Sequence[Image.Image], prompt: str, seed: int) -> tuple[Image.Image, dict[str, Any]]:
        return generate(self.pipe, images, prompt, seed=seed, options=self.options)


def model_generator(model: str, load: LoadOptions | None = None, generation: GenerationOptions | None = None
                    ) -> tuple[Callable[[], PipelineGenerator], int]:
    """`(make_generator, max_inputs)` for an edit model: every option checked and every file found now, before
    a workbook is touched; `make_generator()` loads the pipeline (a process calls it only when it has rows to
    do). `max_inputs`: how many input images the model takes."""
    from editforge.models.loading import build_pipeline, prepare_load

    plan = prepare_load(model, load)
    if not plan.family.is_edit:
        raise EditForgeError(f"`model` {model} is text-to-image ({plan.family.name}); synth needs an edit model "
                             "such as qwen-image-edit-2509")
    check_load_request(plan, images=[1], options=generation)
    return (lambda: PipelineGenerator(build_pipeline(plan), generation)), plan.family.max_images


def load_generator(model: str, load: LoadOptions | None = None, generation: GenerationOptions | None = None
                   ) -> PipelineGenerator:
    """`model_generator`'s generator, loaded: what a Ray worker calls on its own machine, so the files and
    the device are its own (`functools.partial(load_generator, model, load, generation)` pickles small)."""
    return model_generator(model, load, generation)[0]()
