"""The trained LoRA: add it to the transformer (fresh or from a file), read it out, save it for others.

Saved files bake `alpha / rank` into lora_B, so they carry no alpha and every loader (diffusers'
`load_lora_weights`, `editforge edit --lora`, ComfyUI) applies them at scale 1.0 with the same result.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from editforge.errors import EditForgeError
from editforge.files import atomic_write

ADAPTER = "editforge"
PREFIXES = {"diffusers": "transformer.", "comfyui": "diffusion_model."}


def add_lora(pipe, config) -> list[torch.nn.Parameter]:
    """Freeze the transformer, add the LoRA described by `config` (a `LoraConfig`), return its parameters."""
    from peft import LoraConfig

    transformer = pipe.transformer
    transformer.requires_grad_(False)
    if config.init_from:
        from editforge.models.lora import LoraSpec, load_lora

        # diffusers converts every known key layout (kohya, Lightning, ComfyUI, ...); rank and targets are the file's.
        load_lora(pipe, LoraSpec(Path(config.init_from)), ADAPTER)
    else:
        peft_config = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                 target_modules=list(config.target_modules), init_lora_weights=True)
        try:
            transformer.add_adapter(peft_config, adapter_name=ADAPTER)
        except ValueError as exc:
            raise EditForgeError(f"lora.target_modules: {exc}") from exc
    params = [p for n, p in transformer.named_parameters() if f".{ADAPTER}." in n]
    for p in params:
        # Trainable weights stay fp32 even on a bf16 (or quantized) base: bf16 updates of 1e-4 round to nothing.
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def lora_layers(transformer):
    from peft.tuners.lora import LoraLayer

    for name, module in transformer.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
            yield name, module


def lora_state_dict(transformer, prefix: str = "") -> dict[str, torch.Tensor]:
    """lora_A / lora_B per layer, with the layer's alpha/rank scale folded into lora_B."""
    tensors = {}
    for name, module in lora_layers(transformer):
        down = module.lora_A[ADAPTER].weight
        up = module.lora_B[ADAPTER].weight * module.scaling[ADAPTER]
        tensors[f"{prefix}{name}.lora_A.weight"] = down.detach().float().cpu().contiguous()
        tensors[f"{prefix}{name}.lora_B.weight"] = up.detach().float().cpu().contiguous()
    return tensors


def save_lora(transformer, path: Path, export_format: str = "diffusers", metadata: dict | None = None) -> Path:
    """Write the LoRA atomically (temp file + rename): a crash never leaves half a file under `path`."""
    from safetensors.torch import save

    tensors = lora_state_dict(transformer, PREFIXES[export_format])
    info = {"format": "pt", "editforge": json.dumps({"export_format": export_format, **(metadata or {})})}
    return atomic_write(path, lambda fh: fh.write(save(tensors, metadata=info)))


def trainable_state(transformer) -> dict[str, torch.Tensor]:
    """The raw adapter weights (unscaled), for checkpoints: resuming must restore them bit for bit."""
    return {name: p.detach().cpu().clone() for name, p in transformer.named_parameters() if f".{ADAPTER}." in name}


def load_trainable_state(transformer, state: dict[str, torch.Tensor]) -> None:
    params = dict(transformer.named_parameters())
    missing = [name for name in state if name not in params]
    if missing:
        raise EditForgeError(f"checkpoint does not match this LoRA (e.g. {missing[0]}); same lora.* settings?")
    resized = next((name for name, tensor in state.items() if tensor.shape != params[name].shape), None)
    if resized is not None:  # lora.rank changed since the checkpoint: copy_ would fail with a shape error
        raise EditForgeError(f"checkpoint does not match this LoRA: {resized} is {tuple(state[resized].shape)} there, "
                             f"{tuple(params[resized].shape)} here; resume with the checkpoint's lora.rank, "
                             "or start a new output_dir")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)
