"""EditForge: build image-editing datasets with Qwen-Image-Edit and fine-tune LoRAs on them.

The Python API:
    pipe = editforge.load_pipeline("qwen-image-edit-2509", lightning=8, loras=["style.safetensors:0.8"])
    image = editforge.edit(pipe, [Image.open("a.png")], "make the sky red", seed=0)
    image, params = editforge.generate(pipe, images, prompt, seed=0)   # params: what went into the PNG
"""

__version__ = "0.1.0"

# Imported on first use: `editforge --help`, `synth --dry-run` or `dataset check` need neither torch
# nor diffusers, and importing them costs seconds.
_API = {
    "load_pipeline": "editforge.models.loading",
    "edit": "editforge.inference.generate",
    "generate": "editforge.inference.generate",
    "text_to_image": "editforge.inference.generate",
}
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'editforge' has no attribute {name!r}")
