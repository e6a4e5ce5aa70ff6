"""EditForge: build image-editing datasets with Qwen-Image-Edit and fine-tune LoRAs on them.

The Python API:
    pipe = editforge.load_pipeline("qwen-image-edit-2509", lightning=8, loras=["style.safetensors:0.8"])
    image = editforge.edit(pipe, [Image.open("a.png")], "make the sky red", seed=0)
    image, params = editforge.generate(pipe, images, prompt, seed=0)   # params: what went into the PNG
"""

__version__ = "0.1.0"

from editforge.inference.generate import edit, generate, text_to_image  # noqa: E402
from editforge.models.loading import load_pipeline  # noqa: E402

__all__ = ["load_pipeline", "edit", "generate", "text_to_image", "__version__"]
