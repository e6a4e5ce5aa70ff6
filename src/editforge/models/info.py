"""What a loaded pipeline is: `ModelInfo`, which `load_pipeline` attaches to every pipeline it returns.

Generation reads its defaults here (steps, cfg, areas), the PNG metadata what was loaded (model, LoRAs,
Lightning, quantization), training its family. A pipeline built by hand with diffusers has none attached:
`model_info` then tells its family from the pipeline class and the transformer's config, with the family's
defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from editforge.errors import EditForgeError
from editforge.models.lightning import CFG as LIGHTNING_CFG
from editforge.models.registry import Family, family_for, supported_pipelines

ATTRIBUTE = "editforge_info"  # where `load_pipeline` keeps it on the pipeline


@dataclass(frozen=True)
class ModelInfo:
    model: str  # as it was named: family, tiny name, hub id or folder
    family: Family
    max_pixels: int  # the default output / VAE area
    condition_pixels: int | None  # the default VL-encoder area per image (EditPlus)
    lightning: int | None = None  # the steps of the Lightning LoRA loaded or fused in
    lightning_file: str | None = None  # the Lightning file loaded now (not one fused into a saved folder)
    loras: tuple[str, ...] = ()  # `path:scale` of every LoRA in the weights, fused before included
    dtype: str | None = None
    quantize: str | None = None
    files: Mapping[str, str] = field(default_factory=dict)  # single-file components: {"transformer": "x.gguf (gguf Q8_0)"}
    fast_path: Mapping[str, Any] = field(default_factory=dict)  # what `apply_fast_path` switched on

    @property
    def default_steps(self) -> int:
        return self.lightning or self.family.steps

    @property
    def default_cfg(self) -> float:
        return LIGHTNING_CFG if self.lightning else self.family.cfg


def model_info(pipe) -> ModelInfo:
    """What `load_pipeline` attached to `pipe`, or the family's defaults for a pipeline built by hand."""
    info = getattr(pipe, ATTRIBUTE, None)
    if info is not None:
        return info
    family = family_for(type(pipe).__name__, getattr(getattr(pipe, "transformer", None), "config", None) or {})
    if family is None:
        raise EditForgeError(f"{type(pipe).__name__} is not a Qwen-Image pipeline EditForge supports "
                             f"({supported_pipelines()})")
    return ModelInfo(family.hub_id, family, family.max_pixels, family.condition_pixels)


def family_of(pipe) -> Family:
    """The family of a pipeline: what it was loaded as, else what its class and transformer config say."""
    return model_info(pipe).family
