"""User LoRAs and Lightning LoRAs: parse, check, load, fuse.

diffusers' `load_lora_weights` accepts many key layouts, but when none of a file's keys match it only
logs a warning and loads nothing, when some match it loads those without a word, and a path that does not
exist is taken for a hub id. Users lose hours to all three, so EditForge checks the file first and counts
what loaded after.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from editforge.errors import EditForgeError

log = logging.getLogger("editforge")
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
                raise EditForgeError(f"`loras` {text}: the scale {tail!r} is not a number "
                                     f"(PATH:SCALE, e.g. {head}:0.8)") from None
    if not math.isfinite(scale):
        raise EditForgeError(f"`loras` {text}: the scale must be a finite number")
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


class LoraPartlyMatched(UserWarning):
    """Some of a LoRA's layers have no counterpart in the transformer: their weights are not applied."""


@dataclass(frozen=True)
class LoraMatch:
    label: str  # the file's name
    layers: tuple[str, ...]  # the file's layers, named as diffusers names them after converting its layout
    matched: tuple[str, ...]  # those that now carry the adapter

    @property
    def unused(self) -> list[str]:
        matched = set(self.matched)
        return [layer for layer in self.layers if layer not in matched]

    def __str__(self) -> str:
        text = f"lora {self.label}: {len(self.matched)}/{len(self.layers)} layers matched"
        unused = self.unused
        return text + (f"; {len(unused)} unused, e.g. {', '.join(unused[:3])}" if unused else "")


def load_lora(pipe, spec: LoraSpec, adapter_name: str, *, strict: bool = False) -> LoraMatch:
    """Load `spec` into the transformer as `adapter_name` and say how many of its layers matched.

    None matched, or layers of modules this transformer does not have at all (another model's LoRA, e.g.
    Flux's `single_transformer_blocks`): an error. Some unmatched (e.g. blocks beyond this model's depth): a
    `LoraPartlyMatched` warning, or with `strict` an error.
    """
    lora_keys(spec.path)
    try:
        # diffusers' own conversion of every layout it reads (kohya, Lightning, ComfyUI, ...), so the layer
        # names are the ones it loads under
        layers = sorted({_layer_of(key) for key in pipe.lora_state_dict(str(spec.path))})
        pipe.load_lora_weights(str(spec.path), adapter_name=adapter_name)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise EditForgeError(f"LoRA {spec.path} does not fit this model's transformer ({exc})") from exc
    loaded = {f"{TRANSFORMER_PREFIX}{name}" for name in _adapter_layers(pipe.transformer, adapter_name)}
    match = LoraMatch(spec.path.name, tuple(layers), tuple(layer for layer in layers if layer in loaded))
    if not match.matched:
        raise EditForgeError(
            f"LoRA {spec.path}: none of its keys match the transformer, so nothing was loaded. "
            "Is it for another model? (Bare lora_A/lora_B or lora_down/lora_up keys also need "
            "`alpha` tensors or a `transformer.`/`diffusion_model.` prefix.)"
        )
    modules = {_module_pattern(name) for name, _ in pipe.transformer.named_modules()}
    foreign = [layer.removeprefix(TRANSFORMER_PREFIX) for layer in match.unused if layer.startswith(TRANSFORMER_PREFIX)]
    foreign = [layer for layer in foreign if _module_pattern(layer) not in modules]
    if foreign:
        raise EditForgeError(f"LoRA {spec.path} is for another model: {len(foreign)} of its layers name modules this "
                             f"transformer does not have (e.g. {foreign[0]})")
    if match.unused:
        if strict:
            raise EditForgeError(f"{match}; `strict_lora` refuses a LoRA that does not match completely")
        warnings.warn(str(match), LoraPartlyMatched, stacklevel=2)
    else:
        log.info("%s", match)
    return match


TRANSFORMER_PREFIX = "transformer."
_LAYER_SUFFIX = re.compile(r"\.(lora_A|lora_B|lora_down|lora_up|lora\.down|lora\.up|alpha)(\..*)?$")


def _layer_of(key: str) -> str:
    """`transformer.transformer_blocks.0.attn.to_q.lora_A.weight` -> `transformer.transformer_blocks.0.attn.to_q`."""
    return _LAYER_SUFFIX.sub("", key)


def _module_pattern(name: str) -> str:
    """Block and list indices replaced: `transformer_blocks.7.attn.to_out.0` -> `transformer_blocks.N.attn.to_out.N`."""
    return re.sub(r"(?<=\.)\d+(?=\.|$)|^\d+(?=\.)", "N", name)


def _adapter_layers(module, adapter_name: str) -> list[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [name for name, m in module.named_modules()
            if isinstance(m, BaseTunerLayer) and adapter_name in getattr(m, "lora_A", {})]


def activate_and_fuse(pipe, adapters: dict[str, float], *, fuse: bool) -> None:
    """Apply the adapters with their scales; with `fuse`, bake them into the weights and drop the LoRA layers."""
    if not adapters:
        return
    pipe.set_adapters(list(adapters), adapter_weights=list(adapters.values()))
    if fuse:
        pipe.fuse_lora(components=["transformer"], lora_scale=1.0, adapter_names=list(adapters))
        pipe.unload_lora_weights()
