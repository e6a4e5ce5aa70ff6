"""What `editforge train` trains and how one optimizer step runs, as plain functions: the training loop and
`editforge bench train` call these same functions, so the benchmark measures exactly what a run does.
"""

from __future__ import annotations

import os
from typing import Iterable

import torch

from editforge.errors import EditForgeError
from editforge.models.block_swap import recompute_whole_block, swap_blocks
from editforge.models.loading import quantize_transformer
from editforge.models.speed import attention_for_mask, best_attention_backend
from editforge.train.lora import add_lora
from editforge.train.objective import flow_matching_loss


def make_accelerator(mixed_precision: str, gradient_accumulation: int = 1):
    """accelerate's Accelerator as a training run sets it up, on one process or under `accelerate launch`."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs, InitProcessGroupKwargs

    # accelerate keeps its settings (mixed precision, ...) in a process-wide singleton; a notebook or test
    # that calls train() again with other settings needs it cleared (the process group is kept).
    AcceleratorState._reset_state()
    # cpu=True on a machine without CUDA makes any multi-process launch (torchrun, `accelerate launch
    # --multi_gpu`) form a gloo group instead of silently running N independent single-process copies.
    # find_unused_parameters: the last block's text-stream output is discarded by the model, so LoRA layers
    # there never get a gradient, which plain DDP treats as an error. A fresh LoRA has none there
    # (train.lora.dead_end_modules), but one started from a file (`lora.init_from`) may.
    # DeepSpeed (`accelerate launch` with a DEEPSPEED config) without CUDA: cpu=True would make accelerate
    # drop DeepSpeed silently and run plain DDP, and cpu=False alone leaves it no backend (every process then
    # believes it is rank 0 of 1). Naming gloo makes accelerate start DeepSpeed's process group on gloo,
    # which DeepSpeed's CPU accelerator uses anyway when oneCCL is not installed.
    cpu = not torch.cuda.is_available()
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    if cpu and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        cpu = False
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
        _no_deepspeed_shm_op()
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu, gradient_accumulation_steps=gradient_accumulation,
                       kwargs_handlers=handlers)


def _no_deepspeed_shm_op() -> None:
    """DeepSpeed on a CPU first JIT-compiles a shared-memory all-reduce kernel (C++, about a minute and a half on
    a fresh machine) for the all-reduces gloo does anyway; a CPU run of EditForge (tests, trying a config
    out) is tiny, so it goes without. On a GPU DeepSpeed has no such op (NCCL does the all-reduce)."""
    import importlib

    # by module path: in the package `deepspeed.comm`, the attribute `torch` is PyTorch itself
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


def prepare_model(pipe, lora, *, quantize: str | None, gradient_checkpointing: bool, blocks_to_swap: int = 0,
                  device: str | None = None) -> list[torch.nn.Parameter]:
    """Make `pipe.transformer` trainable as a run trains it; returns the LoRA's parameters.

    With `blocks_to_swap`, the transformer comes on the CPU: the frozen weights of that many blocks stay there
    (`editforge.models.block_swap`), everything else, the LoRA included, goes to `device`.

    Frozen base, quantized (`fp8_config`: weights, and activations where the GPU has fp8 matmuls) before the
    LoRA is added: quantizing after would turn the LoRA's own layers into frozen quantized ones that get no
    gradient. The LoRA stays fp32; activations are recomputed in
    the backward pass with `gradient_checkpointing`; attention runs on the fastest backend that has a
    backward pass for the base weights' dtype (FlashAttention 3 has none in diffusers 0.42).
    """
    transformer = pipe.transformer
    dtype = transformer.dtype
    transformer.requires_grad_(False)
    if quantize:
        quantize_transformer(transformer, quantize, device)
    params = add_lora(pipe, lora)
    if gradient_checkpointing:
        transformer.enable_gradient_checkpointing(recompute_whole_block if blocks_to_swap else None)
    if blocks_to_swap:
        swap_blocks(transformer, blocks_to_swap, device)
        params = [p for p in transformer.parameters() if p.requires_grad]  # the LoRA's, now on the device
    device = str(next(transformer.parameters()).device)
    transformer.set_attention_backend(best_attention_backend(device, dtype, training=True))
    return params


def make_optimizer(params, tc) -> torch.optim.Optimizer:
    kwargs = dict(lr=tc.learning_rate, betas=tc.betas, weight_decay=tc.weight_decay)
    if tc.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError as exc:
            raise EditForgeError("train.optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes") from exc
        return bnb.optim.AdamW8bit(params, **kwargs)
    return torch.optim.AdamW(params, **kwargs)


def optimizer_step(accelerator, model, params, optimizer,
                   micro_batches: Iterable[tuple[dict, torch.Tensor, torch.Tensor]],
                   *, max_grad_norm: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimizer step over `micro_batches` (batch, sigmas, noise), as many as the accelerator accumulates.

    Returns, as tensors on the device, the mean loss over micro-batches and processes and the gradient norm
    before clipping (None when DeepSpeed clips inside its engine). Nothing here reads a value on the host:
    the GPU never waits for the host within a step (`editforge.train.host_values` reads them later).
    """
    transformer = accelerator.unwrap_model(model)
    losses, grad_norm = [], None
    for batch, sigmas, noise in micro_batches:
        # accelerate's accumulate(): gradients are all-reduced (and the optimizer really steps) only on the
        # last micro-step; DeepSpeed does the same inside its engine. The recomputed forward of gradient
        # checkpointing runs in backward(), so the attention backend must hold for both.
        with accelerator.accumulate(model), attention_for_mask(transformer, batch["prompt_mask"]):
            with accelerator.autocast():
                loss = flow_matching_loss(model, batch, sigmas, noise)
            losses.append(accelerator.reduce(loss.detach(), "mean"))
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(params, max_grad_norm)  # DeepSpeed: its engine clips
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return torch.stack(losses).mean(), grad_norm
