"""Training benchmark: LoRA rank 32 on an edit model's transformer (`--family`, Edit-2509 by default), gradient
checkpointing, one control image, at 512x512 and 1024x1024 (tiny: 32 and 64), bf16 base and int8 (quanto) base.

Builds and steps the model with `editforge train`'s own functions (`editforge.train.step`: the same frozen,
quantized base, LoRA, attention backend, accelerate setup and optimizer step), on synthetic latents: the
cache makes real training read latents from disk, so the VAE and text encoder are not part of a step."""

from __future__ import annotations

import gc
import statistics
import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace

import torch

from editforge.benchmark.architectures import DEFAULT_FAMILY, full_transformer
from editforge.benchmark.timing import matmul_rate, peak_memory, synchronize, transformer_flops
from editforge.models.registry import FAMILIES, TINY_PREFIX, Family
from editforge.train.config import LoraConfig, TrainConfig
from editforge.train.step import make_accelerator, make_optimizer, optimizer_step, prepare_model

RESOLUTIONS = {"tiny": (32, 64), "full": (512, 1024)}
TEXT_TOKENS = {"tiny": 32, "full": 250}
RANK = 32
# forward + recomputed forward (checkpointing) + backward (~2 forwards): the usual 4x accounting
TRAIN_FLOPS_PER_FORWARD = 4


@dataclass
class TrainRow:
    base: str
    resolution: int
    samples_per_s: float
    step_s: float
    peak_gib: float | None
    tflops: float
    matmul_fraction: float


def tiny_transformer(family: Family, dtype):
    """A fresh copy of the family's tiny transformer (on the CPU)."""
    from diffusers import QwenImageTransformer2DModel

    from editforge.models.tiny import tiny_model_dir

    return QwenImageTransformer2DModel.from_pretrained(tiny_model_dir(TINY_PREFIX + family.name),
                                                       subfolder="transformer", dtype=dtype)


def _transformer(size: str, device: str, dtype, family: Family):
    return full_transformer(device, dtype, family) if size == "full" else tiny_transformer(family, dtype).to(device)


def run(size: str = "tiny", *, family: str = DEFAULT_FAMILY, device: str | None = None, steps: int | None = None,
        bases=("unquantized", "int8")) -> dict:
    from editforge.benchmark.infer import _device_name

    family = FAMILIES[family]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if size == "full" and not device.startswith("cuda"):
        from editforge.errors import EditForgeError

        raise EditForgeError("`size=full` trains the 20B transformer: it needs a CUDA GPU; use `size=tiny` here")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    steps = steps or (5 if size == "full" else 2)
    rate = matmul_rate(device, dtype)
    rows = []
    for base in bases:
        for resolution in RESOLUTIONS[size]:
            rows.append(measure(size, base, resolution, device=device, dtype=dtype, steps=steps, rate=rate,
                                family=family))
            gc.collect()  # the 20B transformer of one measurement must be gone before the next is built
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    return {"kind": "train", "size": size, "family": family.name, "device": _device_name(device), "dtype": str(dtype),
            "rank": RANK,
            "matmul_tflops": rate / 1e12, "rows": [asdict(r) for r in rows]}


def measure(size: str, base: str, resolution: int, *, device: str, dtype, steps: int, rate: float,
            family: Family = FAMILIES[DEFAULT_FAMILY]) -> TrainRow:
    """Median seconds of one optimizer step (batch 1: a target and one control) after a warm-up step."""
    transformer = _transformer(size, device, dtype, family)
    train_config = TrainConfig(mixed_precision="bf16" if dtype == torch.bfloat16 else "no",
                               quantize=None if base == "unquantized" else base)
    accelerator = make_accelerator(train_config.mixed_precision)
    params = prepare_model(SimpleNamespace(transformer=transformer), LoraConfig(rank=RANK, alpha=RANK),
                           quantize=train_config.quantize, gradient_checkpointing=train_config.gradient_checkpointing)
    model, optimizer = accelerator.prepare(transformer, make_optimizer(params, train_config))
    model.train()
    channels = transformer.config.in_channels // 4
    latent = resolution // 8
    text_tokens = TEXT_TOKENS[size]
    batch = {
        "target": torch.randn(1, channels, latent, latent, device=device, dtype=dtype),
        "controls": [torch.randn(1, channels, latent, latent, device=device, dtype=dtype)],
        "prompt_embeds": torch.randn(1, text_tokens, transformer.config.joint_attention_dim, device=device,
                                     dtype=dtype),
        "prompt_mask": None,  # one prompt: nothing padded
    }

    def step():
        micro_batch = (batch, torch.rand(1, device=device), torch.randn_like(batch["target"]))
        optimizer_step(accelerator, model, params, optimizer, [micro_batch], max_grad_norm=train_config.max_grad_norm)

    step()  # warm-up
    times = []
    with peak_memory(device) as memory:
        for _ in range(steps):
            synchronize(device)
            start = time.perf_counter()
            step()
            synchronize(device)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    image_tokens = 2 * (latent // 2) ** 2  # target + one control
    flops = TRAIN_FLOPS_PER_FORWARD * transformer_flops(transformer.config, image_tokens, text_tokens)
    return TrainRow(base, resolution, 1 / seconds, seconds, memory["peak_gib"], flops / seconds / 1e12,
                    flops / seconds / rate)
