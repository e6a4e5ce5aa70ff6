"""`load_pipeline`: a model string and options in, a ready diffusers pipeline out.

Order matters and is fixed here: load -> Lightning scheduler -> LoRAs (checked) -> fuse -> quantize ->
device/offload. Fusing comes before quantizing because optimum-quanto's `fuse_lora` on a quantized
model is a silent no-op.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import torch

from editforge.errors import EditForgeError
from editforge.models import lightning as lightning_lib
from editforge.models.lora import LoraSpec, activate_and_fuse, load_lora, lora_keys, parse_lora_arg
from editforge.models.registry import ModelSpec, resolve_model
from editforge.models.speed import apply_fast_path
from editforge.models.text_encoder import allow_processor_without_video, fix_mrope_positions
from editforge.models.tiny import TINY_LIGHTNING_DIR

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32,
          "float32": torch.float32}
QUANTIZE = (None, "int8", "fp8")
OFFLOAD = (None, "model", "sequential")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_pipeline(
    model: str,
    *,
    lightning: int | None = None,
    lightning_path: str | Path | None = None,
    loras: Iterable[LoraSpec | str] = (),
    dtype: str | torch.dtype | None = None,
    quantize: str | None = None,
    offload: str | None = None,
    device: str | None = None,
    vae_tiling: bool = False,
    fuse: bool = True,
    force: bool = False,
    strict_lora: bool = False,
    attention: str | None = "auto",
    compile: bool | None = False,
    reuse_embeddings: bool = True,
):
    """Load `model` (family, tiny name, hub id or folder) ready to generate.

    `attention`, `compile` and `reuse_embeddings` are the fast path (`editforge.models.speed`): exact,
    except that a compiled or other attention kernel may round differently in the last bits.
    `compile=None` compiles on CUDA only (worth it for long runs such as synth).
    A LoRA of which only some layers match the transformer loads with a `LoraPartlyMatched` warning saying how
    many; `strict_lora` makes that an error.
    The returned pipeline carries `pipe.editforge_info`: the model, family, LoRAs and size defaults that
    `editforge.generate` uses and records in every PNG.
    """
    spec = resolve_model(model)
    loras = [parse_lora_arg(x) if isinstance(x, str) else x for x in loras]
    device = device or default_device()
    torch_dtype = _resolve_dtype(dtype, device)
    if quantize not in QUANTIZE:
        raise EditForgeError(f"--quantize must be none, int8 or fp8, not {quantize}")
    if offload not in OFFLOAD:
        raise EditForgeError(f"--offload must be none, model or sequential, not {offload}")
    if offload and not device.startswith("cuda"):
        raise EditForgeError("--offload moves weights between CPU and GPU; it needs a CUDA device")
    if quantize and not fuse and (lightning or loras):
        raise EditForgeError("LoRAs must be fused before quantizing (quantized layers ignore fuse_lora)")

    # Every file is checked before the model loads: a typo should not cost a 60 GB load.
    if lightning and spec.fused_lightning and not force:
        raise EditForgeError(f"{model} already has Lightning {spec.fused_lightning}-step fused in; drop --lightning")
    if lightning_path and not lightning:
        raise EditForgeError("--lightning-path needs --lightning 4 or 8 (the step count it was distilled for)")
    lightning_file = None
    if lightning:
        local = Path(spec.source) / TINY_LIGHTNING_DIR if spec.is_local else None
        lightning_file = lightning_lib.resolve_file(
            spec.family, lightning, path=lightning_path, local_dir=local, force=force
        )
    for lora in loras:
        lora_keys(lora.path)

    pipe = _from_pretrained(spec, torch_dtype)
    fix_mrope_positions(pipe.text_encoder)

    adapters: dict[str, float] = {}
    if lightning_file:
        pipe.scheduler = lightning_lib.scheduler()
        load_lora(pipe, LoraSpec(lightning_file), "lightning")
        adapters["lightning"] = 1.0
    for i, lora in enumerate(loras):
        name = f"lora_{i}"
        load_lora(pipe, lora, name, strict=strict_lora)
        adapters[name] = lora.scale
    activate_and_fuse(pipe, adapters, fuse=fuse)

    if quantize:
        quantize_transformer(pipe.transformer, quantize)
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    if vae_tiling:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    if compile is None:
        compile = device.startswith("cuda")
    fast = apply_fast_path(pipe, device=device, attention=attention, compile=compile,
                           reuse_embeddings=reuse_embeddings)

    pipe.editforge_info = {
        "model": model,
        "family": spec.family.name,
        "max_pixels": spec.max_pixels,
        "condition_pixels": spec.condition_pixels,
        "lightning": lightning or spec.fused_lightning,
        "lightning_file": lightning_file.name if lightning_file else None,
        "loras": [lora.label for lora in loras] + list(spec.fused),
        "dtype": str(torch_dtype).removeprefix("torch."),
        "quantize": quantize,
        "fast_path": fast,
        "default_steps": lightning or spec.fused_lightning or spec.family.steps,
        "default_cfg": lightning_lib.CFG if lightning or spec.fused_lightning else spec.family.cfg,
    }
    return pipe


def _resolve_dtype(dtype, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise EditForgeError(f"--dtype must be bf16 or fp32, not {dtype}")
    return DTYPES[dtype]


def _from_pretrained(spec: ModelSpec, torch_dtype: torch.dtype):
    import diffusers

    allow_processor_without_video()
    pipeline_class = getattr(diffusers, spec.family.pipeline_class)
    # Loading a 20B model prints a wall of progress bars and notices; keep the user's terminal readable.
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    try:
        return pipeline_class.from_pretrained(spec.source, dtype=torch_dtype)
    except OSError as exc:
        if spec.is_local:
            raise EditForgeError(f"could not load the pipeline folder {spec.source}: {str(exc).splitlines()[0]}") from exc
        raise EditForgeError(
            f"{spec.source} is not (fully) cached locally and could not be downloaded: download it where there "
            f"is internet (`hf download {spec.source}`), or pass a local folder with --model"
        ) from exc


def quantize_transformer(transformer: torch.nn.Module, kind: str) -> None:
    """Weight-only quantization of the (already fused) transformer: int8 via optimum-quanto, fp8 via torchao."""
    try:
        if kind == "int8":
            from optimum.quanto import freeze, qint8, quantize

            quantize(transformer, weights=qint8)
            freeze(transformer)
        else:
            from torchao.quantization import (
                Float8DynamicActivationFloat8WeightConfig, Float8WeightOnlyConfig, quantize_,
            )

            # fp8 matmuls where the GPU has them (Ada/Hopper and newer): that is where fp8 is faster;
            # elsewhere (CPU, older GPUs) fp8 weights only, which saves memory.
            weight = next(transformer.parameters())
            fast = weight.is_cuda and torch.cuda.get_device_capability(weight.device) >= (8, 9)
            quantize_(transformer, Float8DynamicActivationFloat8WeightConfig() if fast else Float8WeightOnlyConfig())
    except ImportError as exc:
        raise EditForgeError(f"--quantize {kind} needs the quant extra: pip install 'editforge[quant]' ({exc})") from exc
