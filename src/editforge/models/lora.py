"""User LoRAs and Lightning LoRAs: parse, check, load, fuse.

diffusers' `load_lora_weights` accepts many key layouts, but when none of a file's keys match it only
logs a warning and loads nothing, and a path that does not exist is taken for a hub id. Users lose
hours to both, so EditForge checks the file first and checks the result after.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from editforge.errors import EditForgeError

LORA_KEY = re.compile(r"(lora_down|lora_up|lora_A|lora_B|lora\.down|lora\.up)")


@dataclass(frozen=True)
class LoraSpec:
    path: Path
    scale: float = 1.0

    @property
    def label(self) -> str:
        return f"{self.path.name}:{self.scale:g}"


def parse_lora_arg(text: str) -> LoraSpec:
    """`PATH[:SCALE]`. The scale is split off only when it parses as a number, so `C:\\x.safetensors` works;
    a tail that is no number after a LoRA file's name is a bad scale, not part of the name."""
    path, scale = text, 1.0
    head, sep, tail = text.rpartition(":")
    if sep and head:
        try:
            scale = float(tail)
            path = head
        except ValueError:
            if not Path(text).expanduser().exists() and (head.lower().endswith(".safetensors")
                                                          or Path(head).expanduser().is_file()):
                raise EditForgeError(f"--lora {text}: the scale {tail!r} is not a number "
                                     f"(PATH:SCALE, e.g. {head}:0.8)") from None
    if not math.isfinite(scale):
        raise EditForgeError(f"--lora {text}: the scale must be a finite number")
    return LoraSpec(Path(path).expanduser(), scale)


def lora_keys(path: Path) -> list[str]:
    """The LoRA tensor names in `path`; an error naming the file if it is missing, unreadable or not a LoRA."""
    from safetensors import safe_open

    if path.is_dir():
        raise EditForgeError(f"LoRA {path} is a folder; give the .safetensors file inside it")
    if not path.is_file():
        raise EditForgeError(f"LoRA file not found: {path} (EditForge never looks a missing file up on the hub)")
    try:
        with safe_open(str(path), framework="pt") as fh:
            keys = list(fh.keys())
    except Exception as exc:
        raise EditForgeError(f"LoRA file {path} is not a readable .safetensors file ({exc})") from exc
    lora = [k for k in keys if LORA_KEY.search(k)]
    if not lora:
        raise EditForgeError(f"LoRA file {path} holds no LoRA weights (no lora_A/lora_B or lora_down/lora_up keys)")
    return lora


def load_lora(pipe, spec: LoraSpec, adapter_name: str) -> None:
    """Load `spec` into the transformer as `adapter_name`; an error if diffusers matched none of its keys."""
    lora_keys(spec.path)
    before = _adapter_layer_count(pipe.transformer, adapter_name)
    try:
        pipe.load_lora_weights(str(spec.path), adapter_name=adapter_name)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise EditForgeError(f"LoRA {spec.path} does not fit this model's transformer ({exc})") from exc
    if _adapter_layer_count(pipe.transformer, adapter_name) <= before:
        raise EditForgeError(
            f"LoRA {spec.path}: none of its keys match the transformer, so nothing was loaded. "
            "Is it for another model? (Bare lora_A/lora_B or lora_down/lora_up keys also need "
            "`alpha` tensors or a `transformer.`/`diffusion_model.` prefix.)"
        )


def _adapter_layer_count(module, adapter_name: str) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(
        1
        for m in module.modules()
        if isinstance(m, BaseTunerLayer) and adapter_name in getattr(m, "lora_A", {})
    )


def activate_and_fuse(pipe, adapters: dict[str, float], *, fuse: bool) -> None:
    """Apply the adapters with their scales; with `fuse`, bake them into the weights and drop the LoRA layers."""
    if not adapters:
        return
    pipe.set_adapters(list(adapters), adapter_weights=list(adapters.values()))
    if fuse:
        pipe.fuse_lora(components=["transformer"], lora_scale=1.0, adapter_names=list(adapters))
        pipe.unload_lora_weights()
