"""The trained LoRA: add it to the transformer (fresh or from a file), read it out, save it for others.

Saved files bake `alpha / rank` into lora_B, so they carry no alpha and every loader (diffusers'
`load_lora_weights`, `editforge edit --lora`, ComfyUI) applies them at scale 1.0 with the same result.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from editforge.errors import EditForgeError
from editforge.files import atomic_write
from editforge.quiet import quiet_adapter_loading

log = logging.getLogger("editforge.train")
ADAPTER = "editforge"
PREFIXES = {"diffusers": "transformer.", "comfyui": "diffusion_model."}
# The transformer returns the image stream only: the last block's text-stream output is computed and dropped.
# What only feeds that output never gets a gradient: the text MLP, the text attention's output projection, and
# the text queries (image tokens attend with their own queries; text keys and values still reach them). A LoRA
# there would be dead weight in memory, in the optimizer and in the saved file, so none is added.
TEXT_STREAM_DEAD_ENDS = ("attn.add_q_proj", "attn.to_add_out", "txt_mlp.net.0.proj", "txt_mlp.net.2")


def dead_end_modules(transformer) -> list[str]:
    """The last block's layers whose output the model discards (module names, as peft's `exclude_modules`)."""
    last = len(transformer.transformer_blocks) - 1
    return [f"transformer_blocks.{last}.{name}" for name in TEXT_STREAM_DEAD_ENDS]


def add_lora(pipe, config) -> list[torch.nn.Parameter]:
    """Freeze the transformer, add the LoRA described by `config` (a `LoraConfig`), return its parameters."""
    from peft import LoraConfig

    transformer = pipe.transformer
    transformer.requires_grad_(False)
    if config.init_from:
        from editforge.models.lora import LoraSpec, load_lora

        # diffusers converts every known key layout (kohya, Lightning, ComfyUI, ...); rank and targets are the file's.
        # Its layers on the dead ends (if any) are kept as they are: ZeroGradientWatch names them.
        load_lora(pipe, LoraSpec(Path(config.init_from)), ADAPTER)
    else:
        peft_config = LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                 target_modules=list(config.target_modules), init_lora_weights=True,
                                 exclude_modules=dead_end_modules(transformer) or None)
        try:
            with quiet_adapter_loading():
                transformer.add_adapter(peft_config, adapter_name=ADAPTER)
        except ValueError as exc:
            raise EditForgeError(f"lora.target_modules: {exc}") from exc
    params = [p for n, p in transformer.named_parameters() if f".{ADAPTER}." in n]
    for p in params:
        # Trainable weights stay fp32 even on a bf16 (or quantized) base: bf16 updates of 1e-4 round to nothing.
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


class ZeroGradientWatch:
    """Finds LoRA parameters whose gradient is exactly zero in each of the first `steps` optimizer steps (a layer
    whose output the model drops, a frozen path) and warns once, in one line, naming them.

    lora_B starts at zero, so every lora_A gets a zero gradient in the first step: only a parameter that stays
    at zero over several steps is dead. Hooks see each gradient as it is accumulated, before an engine (DDP,
    DeepSpeed) takes it over, so they are registered before `accelerator.prepare`; a parameter DDP skips as
    unused gets no gradient at all and counts as zero.
    """

    def __init__(self, transformer, params, steps: int = 3):
        names = {id(p): name for name, p in transformer.named_parameters()}
        self.names = [names[id(p)] for p in params]
        # one flag per parameter, on its device: no host sync per backward pass
        self.alive = [torch.zeros((), dtype=torch.bool, device=p.device) for p in params]
        self.hooks = [p.register_post_accumulate_grad_hook(self._seen(i)) for i, p in enumerate(params)]
        self.steps_left = steps
        self.steps = steps

    def _seen(self, i: int):
        def hook(p):
            self.alive[i] |= p.grad.ne(0).any()
        return hook

    def step(self) -> None:
        """Call after each optimizer step."""
        self.steps_left -= 1

    def report(self) -> list[str] | None:
        """Once the watched steps are done: the dead parameters' names (warned about), and the hooks removed;
        None before then, or after the report was made."""
        if self.steps_left > 0 or not self.hooks:
            return None
        for hook in self.hooks:
            hook.remove()
        self.hooks = []
        dead = [name for name, alive in zip(self.names, self.alive) if not alive.item()]
        if dead:
            log.warning("%d LoRA parameters got a gradient of exactly 0 in the first %d steps, so they do not learn "
                        "(e.g. %s); drop their layers from lora.target_modules", len(dead), self.steps,
                        ", ".join(dead[:3]))
        return dead


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
