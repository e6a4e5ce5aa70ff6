"""`LoadOptions`: how `load_pipeline` loads a model, as one typed value instead of a bag of keywords.

The choices are `Enum`s (the CLI lists them in `--help`); the library takes their plain values as well
(`quantize="int8"`), and "none" or None for "off". `None` always means "the default".

    options = LoadOptions(lightning=8, loras=("style.safetensors:0.8",), quantize="fp8")
    pipe = load_pipeline("qwen-image-edit-2509", options)              # or load_pipeline(model, lightning=8)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from editforge.errors import EditForgeError


class Quantize(str, Enum):
    NONE = "none"
    INT8 = "int8"  # optimum-quanto weights
    FP8 = "fp8"  # torchao: fp8 matmuls on Ada/Hopper, fp8 weights elsewhere


class Offload(str, Enum):
    NONE = "none"
    MODEL = "model"
    SEQUENTIAL = "sequential"


class Dtype(str, Enum):
    BF16 = "bf16"
    FP32 = "fp32"


class LightningSteps(str, Enum):
    OFF = "off"
    FOUR = "4"
    EIGHT = "8"

    @property
    def steps(self) -> int | None:
        return None if self is LightningSteps.OFF else int(self.value)


def choice(value: Any, choices: type[Enum], name: str) -> str | None:
    """An enum member or its value as the plain value; "none" and None as None; else an error naming `name`."""
    value = getattr(value, "value", value)
    if value is None or value == "none":
        return None
    allowed = [c.value for c in choices]
    if value not in allowed:
        raise EditForgeError(f"`{name}` must be {', '.join(allowed[:-1])} or {allowed[-1]}, not {value}")
    return value


@dataclass(frozen=True)
class LoadOptions:
    lightning: int | None = None  # 4 or 8: the family's Lightning LoRA with its scheduler, steps and cfg
    lightning_path: str | Path | None = None  # a local copy of the Lightning file instead of the hub cache
    loras: tuple = ()  # "path[:scale]" strings or `LoraSpec`s, fused into the weights
    dtype: Any = None  # "bf16", "fp32" or a torch.dtype; default bf16 on a GPU, fp32 on a CPU
    quantize: str | None = None  # "int8" or "fp8", after the LoRAs are fused
    offload: str | None = None  # "model" or "sequential" CPU offload (CUDA only)
    blocks_to_swap: int = 0  # transformer blocks whose weights stay in CPU memory, copied in for each use
    device: str | None = None  # "cuda", "cuda:1", "cpu"; default: cuda if present
    vae_tiling: bool = False
    transformer: str | Path | None = None  # a single-file transformer (ComfyUI .safetensors, fp8, GGUF) for the model's
    text_encoder: str | Path | None = None  # ... and text encoder (ComfyUI's qwen_2.5_vl_7b*.safetensors)
    vae: str | Path | None = None  # ... and VAE (ComfyUI's qwen_image_vae.safetensors)
    fuse: bool = True  # fuse LoRAs into the weights (needed before quantizing)
    force: bool = False  # load a Lightning file whose name says another family, an unknown model or other steps
    strict_lora: bool = False  # refuse a LoRA that matches the transformer only partly
    skip_memory_check: bool = False  # load even when the measured needs exceed the GPU (editforge.models.memory)
    attention: str | None = "auto"  # the fast path (`editforge.models.speed`): attention backend, ...
    compile: bool | None = False  # ... torch.compile of the repeated blocks (None: on CUDA only) ...
    reuse_embeddings: bool = True  # ... and the prompt-embedding cache

    def __post_init__(self):
        set_field = object.__setattr__  # frozen: normalise once, here
        set_field(self, "loras", tuple(self.loras or ()))
        set_field(self, "quantize", choice(self.quantize, Quantize, "quantize"))
        set_field(self, "offload", choice(self.offload, Offload, "offload"))
        set_field(self, "dtype", getattr(self.dtype, "value", self.dtype))
        if isinstance(self.lightning, LightningSteps):
            set_field(self, "lightning", self.lightning.steps)


Options = TypeVar("Options")


def with_overrides(cls: type[Options], options: Options | None, overrides: dict[str, Any]) -> Options:
    """`options` (or the defaults) with keyword arguments on top: the public functions take either."""
    options = cls() if options is None else options
    try:
        return dataclasses.replace(options, **overrides) if overrides else options
    except TypeError as exc:  # a keyword that is no option: say which, as a function call would
        raise TypeError(f"{cls.__name__}: {exc}") from None
