"""`load_pipeline`: a model string and options in, a ready diffusers pipeline out.

In two steps, so that a command can check everything before a model loads: `prepare_load` checks the
options and finds every file (`LoadPlan`), `build_pipeline` loads them. Order matters and is fixed
there: load -> Lightning scheduler -> LoRAs (checked) -> fuse -> quantize -> device/offload. Fusing comes
before quantizing because optimum-quanto's `fuse_lora` on a quantized model is a silent no-op.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch

from editforge.errors import EditForgeError
from editforge.models import lightning as lightning_lib
from editforge.models.hub import pipeline_folder
from editforge.models.lora import LoraSpec, activate_and_fuse, load_lora, lora_keys, parse_lora_arg
from editforge.models.registry import ModelSpec, resolve_model
from editforge.models.speed import apply_fast_path, cuda_capability
from editforge.models.text_encoder import allow_processor_without_video, fix_mrope_positions
from editforge.models.tiny import TINY_LIGHTNING_DIR
from editforge.quiet import no_progress_bars, quiet_adapter_loading

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}
QUANTIZE = (None, "int8", "fp8")
OFFLOAD = (None, "model", "sequential")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class LoadPlan:
    """What `load_pipeline` will load, every file found and every option checked: building it reads only
    local files. `prepare_load` makes one, so a command can check its whole request before a model loads."""

    model: str
    spec: ModelSpec
    folder: Path  # the pipeline folder on disk (for a hub model, its cached snapshot)
    lightning: int | None
    lightning_file: Path | None
    loras: tuple[LoraSpec, ...]
    dtype: torch.dtype
    device: str
    quantize: str | None
    offload: str | None
    vae_tiling: bool
    fuse: bool
    strict_lora: bool
    attention: str | None
    compile: bool
    reuse_embeddings: bool

    @property
    def family(self):
        return self.spec.family

    @property
    def default_steps(self) -> int:
        return self.lightning or self.spec.fused_lightning or self.family.steps

    @property
    def default_cfg(self) -> float:
        return lightning_lib.CFG if self.lightning or self.spec.fused_lightning else self.family.cfg

    def scheduler_config(self) -> dict:
        """The config of the scheduler the pipeline will run: Lightning's, else the folder's own."""
        if self.lightning_file:
            return dict(lightning_lib.SCHEDULER_CONFIG)
        path = self.folder / "scheduler" / "scheduler_config.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise EditForgeError(f"--model {self.model}: unreadable scheduler config {path} ({exc})") from exc


def load_pipeline(model: str, **options):
    """Load `model` (family, tiny name, hub id or folder) ready to generate; options as `prepare_load`.

    A LoRA of which only some layers match the transformer loads with a `LoraPartlyMatched` warning saying how
    many; `strict_lora` makes that an error.
    The returned pipeline carries `pipe.editforge_info`: the model, family, LoRAs and size defaults that
    `editforge.generate` uses and records in every PNG.
    """
    return build_pipeline(prepare_load(model, **options))


def prepare_load(
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
) -> LoadPlan:
    """Check every option and find every file (downloading what the hub has and the cache lacks), loading
    no weights: a typo, a missing LoRA or an uncached model should not cost a 60 GB load, nor touch a
    workbook.

    `attention`, `compile` and `reuse_embeddings` are the fast path (`editforge.models.speed`): exact,
    except that a compiled or other attention kernel may round differently in the last bits.
    `compile=None` compiles on CUDA only (worth it for long runs such as synth).
    """
    device = resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, device)
    loras = tuple(parse_lora_arg(x) if isinstance(x, str) else x for x in loras)
    if quantize not in QUANTIZE:
        raise EditForgeError(f"--quantize must be none, int8 or fp8, not {quantize}")
    if offload not in OFFLOAD:
        raise EditForgeError(f"--offload must be none, model or sequential, not {offload}")
    if offload and not device.startswith("cuda"):
        raise EditForgeError("--offload moves weights between CPU and GPU; it needs a CUDA device")
    if quantize and not fuse and (lightning or loras):
        raise EditForgeError("LoRAs must be fused before quantizing (quantized layers ignore fuse_lora)")
    for lora in loras:
        lora_keys(lora.path)
    spec = resolve_model(model)
    folder = Path(spec.source) if spec.is_local else pipeline_folder(spec.source, _pipeline_class(spec))
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
    return LoadPlan(
        model=model, spec=spec, folder=folder, lightning=lightning, lightning_file=lightning_file, loras=loras,
        dtype=torch_dtype, device=device, quantize=quantize, offload=offload, vae_tiling=vae_tiling, fuse=fuse,
        strict_lora=strict_lora, attention=attention, compile=device.startswith("cuda") if compile is None else compile,
        reuse_embeddings=reuse_embeddings,
    )


def build_pipeline(plan: LoadPlan):
    """Load what `plan` names: Lightning scheduler -> LoRAs (checked) -> fuse -> quantize -> device/offload."""
    pipe = _from_pretrained(plan)
    fix_mrope_positions(pipe.text_encoder)

    adapters: dict[str, float] = {}
    with quiet_adapter_loading():
        if plan.lightning_file:
            pipe.scheduler = lightning_lib.scheduler()
            load_lora(pipe, LoraSpec(plan.lightning_file), "lightning")
            adapters["lightning"] = 1.0
        for i, lora in enumerate(plan.loras):
            name = f"lora_{i}"
            load_lora(pipe, lora, name, strict=plan.strict_lora)
            adapters[name] = lora.scale
    activate_and_fuse(pipe, adapters, fuse=plan.fuse)

    device = plan.device
    if plan.quantize:
        quantize_transformer(pipe.transformer, plan.quantize)
    if plan.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif plan.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    if plan.vae_tiling:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    fast = apply_fast_path(pipe, device=device, attention=plan.attention, compile=plan.compile,
                           reuse_embeddings=plan.reuse_embeddings)

    spec = plan.spec
    pipe.editforge_info = {
        "model": plan.model,
        "family": spec.family.name,
        "max_pixels": spec.max_pixels,
        "condition_pixels": spec.condition_pixels,
        "lightning": plan.lightning or spec.fused_lightning,
        "lightning_file": plan.lightning_file.name if plan.lightning_file else None,
        "loras": [lora.label for lora in plan.loras] + list(spec.fused),
        "dtype": str(plan.dtype).removeprefix("torch."),
        "quantize": plan.quantize,
        "fast_path": fast,
        "default_steps": plan.default_steps,
        "default_cfg": plan.default_cfg,
    }
    return pipe


def resolve_device(device: str | None) -> str:
    """`device` checked against what this machine has (default: cuda if present)."""
    if device is None:
        return default_device()
    try:
        kind = torch.device(device)
    except (RuntimeError, ValueError):
        raise EditForgeError(f"--device {device}: not a device; use cpu, cuda or cuda:N") from None
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise EditForgeError(f"--device {device}: PyTorch sees no CUDA GPU here (torch {torch.__version__}, "
                                 f"{build}); use --device cpu, or install a CUDA build of torch")
        if kind.index is not None and kind.index >= torch.cuda.device_count():
            raise EditForgeError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                                 f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif kind.type != "cpu":
        raise EditForgeError(f"--device {device}: EditForge runs on cpu or cuda")
    return device


def _resolve_dtype(dtype, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise EditForgeError(f"--dtype must be bf16 or fp32, not {dtype}"
                             + (" (Qwen-Image is made for bf16; float16's narrow range can overflow)"
                                if dtype in ("fp16", "float16") else ""))
    return DTYPES[dtype]


def _pipeline_class(spec: ModelSpec):
    import diffusers

    return getattr(diffusers, spec.family.pipeline_class)


def _from_pretrained(plan: LoadPlan):
    allow_processor_without_video()
    # Loading a 20B model prints a wall of progress bars and notices; keep the user's terminal readable.
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    try:
        with no_progress_bars():
            return _pipeline_class(plan.spec).from_pretrained(plan.folder, dtype=plan.dtype)
    except OSError as exc:
        raise EditForgeError(f"could not load the pipeline folder {plan.folder}: {str(exc).splitlines()[0]}") from exc


def quantize_transformer(transformer: torch.nn.Module, kind: str) -> None:
    """Weight-only quantization of the (already fused) transformer: int8 via optimum-quanto, fp8 via torchao."""
    try:
        if kind == "int8":
            from optimum.quanto import freeze, qint8, quantize

            quantize(transformer, weights=qint8)
            freeze(transformer)
        else:
            from torchao.quantization import quantize_

            quantize_(transformer, fp8_config(str(next(transformer.parameters()).device)))
    except ImportError as exc:
        raise EditForgeError(f"--quantize {kind} needs the quant extra: pip install 'editforge[quant]' ({exc})") from exc


def fp8_config(device: str):
    """torchao's fp8 recipe for `device`: fp8 matmuls where the GPU has them (compute capability 8.9 and up:
    Ada, Hopper and newer), which is where fp8 is faster; elsewhere (CPU, older GPUs) fp8 weights only,
    which saves memory."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Float8WeightOnlyConfig

    capability = cuda_capability(device)
    return Float8DynamicActivationFloat8WeightConfig() if capability and capability >= (8, 9) else Float8WeightOnlyConfig()
