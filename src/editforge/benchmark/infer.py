"""Generation benchmark: the seed script's setup vs plain diffusers vs EditForge's fast path.

Configurations, each on a freshly built transformer (shared text encoder and VAE):
- seed:        Lightning LoRA loaded unfused, transformer quantized to int8 with optimum-quanto
               (what run_qwen_image_edit_generation.py does)
- bf16-fused:  diffusers with the LoRA fused into bf16 weights, default attention, no compile
- fast:        EditForge's fast path: fused, best attention backend, regional torch.compile (GPU)
- fast-fp8:    the fast path on an fp8 (torchao) transformer
Workloads: an EditPlus model (`--family`, Edit-2509 by default) at 1024x1024 (tiny: 64x64) with 1 and 2
references, 8 and 4 Lightning steps.
"""

from __future__ import annotations

import gc
from pathlib import Path
import statistics
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image

from editforge.benchmark.architectures import DEFAULT_FAMILY, build_pipeline, full_transformer
from editforge.benchmark.timing import StageTimer, matmul_rate, peak_memory
from editforge.inference.generate import generate
from editforge.models.lora import LoraSpec, activate_and_fuse, load_lora
from editforge.models.loading import quantize_transformer
from editforge.models.registry import FAMILIES, Family
from editforge.models.speed import apply_fast_path

CONFIGS = ("seed", "bf16-fused", "fast", "fast-fp8")
LIGHTNING_RANK = 64  # a Lightning-shaped random LoRA: speed depends on rank and targets, not values
SIZES = {"tiny": dict(max_pixels=64 * 64, condition_pixels=56 * 56), "full": dict(max_pixels=1024 * 1024,
                                                                                   condition_pixels=384 * 384)}


@dataclass
class InferRow:
    config: str
    references: int
    steps: int
    seconds: float  # median seconds per image
    text_s: float
    denoise_s: float
    vae_s: float
    peak_gib: float | None
    denoise_tflops: float  # achieved matmul TFLOP/s in the transformer
    matmul_fraction: float  # of the measured dense matmul rate
    notes: dict = field(default_factory=dict)


def random_lightning_lora(transformer, path, rank: int = LIGHTNING_RANK) -> None:
    """A LoRA file in the Lightning layout over every attention and MLP projection of `transformer`."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear) or not name.startswith("transformer_blocks."):
            continue
        if not any(part in name for part in (".attn.", "_mlp.")):
            continue
        tensors[f"{name}.lora_down.weight"] = torch.randn(rank, module.in_features, generator=generator) * 0.01
        tensors[f"{name}.lora_up.weight"] = torch.zeros(module.out_features, rank)
        tensors[f"{name}.alpha"] = torch.tensor(float(rank))
    save_file(tensors, str(path))


def prepare(pipe, config: str, size: str, device: str, dtype, lora_path, family: Family) -> dict:
    """Put a fresh transformer into `pipe` and set it up as `config` says; returns notes for the table."""
    if size == "full":
        pipe.transformer = None
        gc.collect()
        torch.cuda.empty_cache()
        pipe.transformer = full_transformer(device, dtype, family)
    else:
        from editforge.benchmark.train import tiny_transformer

        pipe.transformer = tiny_transformer(family, dtype).to(device)
    load_lora(pipe, LoraSpec(Path(lora_path)), "lightning")
    activate_and_fuse(pipe, {"lightning": 1.0}, fuse=config != "seed")
    notes: dict = {}
    if config == "seed":
        quantize_transformer(pipe.transformer, "int8")
        notes["quantize"] = "optimum-quanto int8, LoRA unfused"
    if config == "fast-fp8":
        quantize_transformer(pipe.transformer, "fp8")
        notes["quantize"] = "torchao fp8"
    if config.startswith("fast"):
        notes |= apply_fast_path(pipe, device=device, attention="auto", compile=device.startswith("cuda"),
                                 reuse_embeddings=True)
    return notes


def run(size: str = "tiny", *, family: str = DEFAULT_FAMILY, device: str | None = None, reps: int | None = None,
        configs=CONFIGS, workloads=((1, 8), (1, 4), (2, 8), (2, 4))) -> dict:
    import tempfile

    family = FAMILIES[family]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if size == "full" and not device.startswith("cuda"):
        from editforge.errors import EditForgeError

        raise EditForgeError("`size=full` builds the 20B transformer and the 7B text encoder: it needs a CUDA GPU "
                             "with 80 GB; use `size=tiny` here")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    reps = reps or (3 if size == "full" else 2)
    sizes = SIZES[size]
    rate = matmul_rate(device, dtype)
    pipe = build_pipeline(size, device, dtype, family)
    side = int(sizes["max_pixels"] ** 0.5)
    references = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (side, side, 3), dtype=np.uint8))
                  for i in range(2)]
    rows: list[InferRow] = []
    outputs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        lora_path = f"{tmp}/lightning.safetensors"
        random_lightning_lora(full_transformer(family=family) if size == "full" else pipe.transformer, lora_path)
        for config in configs:
            notes = prepare(pipe, config, size, device, dtype, lora_path, family)
            timer = StageTimer(pipe, device)
            for refs, steps in workloads:
                images = references[:refs]

                def one(rep: int) -> Image.Image:
                    # a new prompt each time, so no configuration profits from embedding reuse here
                    return generate(pipe, images, f"make the sky red, {config} {refs} {steps} {rep}", seed=rep, steps=steps,
                                    cfg=1.0, **sizes)[0]

                one(-1)  # warm-up: compile, cuDNN autotune, allocator
                totals, stages = [], []
                with peak_memory(device) as memory:
                    for rep in range(reps):
                        timer.reset()
                        image = one(rep)
                        totals.append(sum(timer.seconds.values()))
                        stages.append((dict(timer.seconds), timer.transformer_flops))
                if (refs, steps) == workloads[0]:
                    outputs[config] = np.asarray(image, dtype=np.float32)
                middle = sorted(range(reps), key=lambda i: totals[i])[reps // 2]
                seconds, flops = stages[middle]
                achieved = flops / max(seconds.get("denoise", 0.0), 1e-9)
                rows.append(InferRow(config, refs, steps, statistics.median(totals), seconds.get("text", 0.0),
                                     seconds.get("denoise", 0.0), seconds.get("vae", 0.0), memory["peak_gib"],
                                     achieved / 1e12, achieved / rate, notes))
            timer.remove()
    pixel_diff = None
    if "fast-fp8" in outputs and "fast" in outputs:
        pixel_diff = float(np.abs(outputs["fast-fp8"] - outputs["fast"]).mean())
    return {"kind": "infer", "size": size, "family": family.name, "device": _device_name(device), "dtype": str(dtype),
            "matmul_tflops": rate / 1e12, "fp8_mean_abs_pixel_diff": pixel_diff,
            "rows": [asdict(r) for r in rows]}


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    import platform

    return f"CPU {platform.machine()}"
