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

import torch

from editforge.errors import EditForgeError
from editforge.models import lightning as lightning_lib, single_file
from editforge.models.block_swap import swap_blocks
from editforge.models.hub import pipeline_folder
from editforge.models.info import ATTRIBUTE as INFO_ATTRIBUTE, ModelInfo
from editforge.models.memory import check_fits
from editforge.models.lora import LoraSpec, activate_and_fuse, load_lora, lora_keys, parse_lora_arg
from editforge.models.options import LoadOptions, with_overrides
from editforge.models.registry import ModelSpec, resolve_model
from editforge.models.single_file import SingleFile
from editforge.models.speed import apply_fast_path, cuda_capability
from editforge.models.text_encoder import allow_processor_without_video, fix_mrope_positions
from editforge.models.tiny import TINY_LIGHTNING_DIR
from editforge.quiet import no_progress_bars, quiet_adapter_loading

DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class LoadPlan:
    """What `load_pipeline` will load, every file found and every option checked: building it reads only
    local files. `prepare_load` makes one, so a command can check its whole request before a model loads."""

    model: str
    spec: ModelSpec
    folder: Path  # the pipeline folder on disk (for a hub model, its cached snapshot)
    options: LoadOptions  # as given; the fields below are what they resolved to
    lightning_file: Path | None
    loras: tuple[LoraSpec, ...]
    dtype: torch.dtype
    device: str
    compile: bool
    files: tuple[SingleFile, ...] = ()  # single-file components that replace the folder's

    @property
    def keeps_gguf(self) -> bool:
        """A GGUF transformer stays quantized unless something must be fused into it or it is quantized anew."""
        return not (self.lightning_file or self.loras or self.options.quantize)

    @property
    def family(self):
        return self.spec.family

    @property
    def lightning(self) -> int | None:
        """The Lightning steps the pipeline runs with: loaded now, or fused into a saved folder."""
        return self.options.lightning or self.spec.fused_lightning

    def info(self, fast_path=None) -> ModelInfo:
        """What the built pipeline will be: its defaults and what went into its weights."""
        spec = self.spec
        return ModelInfo(
            model=self.model, family=spec.family, max_pixels=spec.max_pixels, condition_pixels=spec.condition_pixels,
            lightning=self.lightning, lightning_file=self.lightning_file.name if self.lightning_file else None,
            loras=tuple(lora.label for lora in self.loras) + spec.fused, dtype=str(self.dtype).removeprefix("torch."),
            quantize=self.options.quantize, fast_path=dict(fast_path or {}),
            files={file.component: file.label for file in self.files},
        )

    def scheduler_config(self) -> dict:
        """The config of the scheduler the pipeline will run: Lightning's, else the folder's own."""
        if self.lightning_file:
            return dict(lightning_lib.SCHEDULER_CONFIG)
        path = self.folder / "scheduler" / "scheduler_config.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise EditForgeError(f"`model` {self.model}: unreadable scheduler config {path} ({exc})") from exc


def load_pipeline(model: str, options: LoadOptions | None = None, **overrides):
    """Load `model` (family, tiny name, hub id or folder) ready to generate; `options` (or the same as keyword
    arguments, e.g. `lightning=8`) as `LoadOptions`, checked as `prepare_load` checks them.

    A LoRA of which only some layers match the transformer loads with a `LoraPartlyMatched` warning saying how
    many; `strict_lora` makes that an error.
    The returned pipeline carries a `ModelInfo` (`editforge.models.info.model_info(pipe)`): the model, family,
    LoRAs and size defaults that `editforge.generate` uses and records in every PNG.
    """
    return build_pipeline(prepare_load(model, options, **overrides))


def prepare_load(model: str, options: LoadOptions | None = None, **overrides) -> LoadPlan:
    """Check every option and find every file (downloading what the hub has and the cache lacks), loading
    no weights: a typo, a missing LoRA or an uncached model should not cost a 60 GB load, nor touch a
    workbook.

    The fast path (`attention`, `compile`, `reuse_embeddings`; `editforge.models.speed`) is exact, except
    that a compiled or other attention kernel may round differently in the last bits.
    """
    options = with_overrides(LoadOptions, options, overrides)
    device = resolve_device(options.device)
    torch_dtype = _resolve_dtype(options.dtype, device)
    loras = tuple(parse_lora_arg(x) if isinstance(x, str) else x for x in options.loras)
    if options.blocks_to_swap and options.offload:
        raise EditForgeError("`blocks_to_swap` does not combine with `offload` (both move weights; pick one)")
    if options.offload and not device.startswith("cuda"):
        raise EditForgeError("`offload` moves weights between CPU and GPU; it needs a CUDA device")
    if options.quantize and not options.fuse and (options.lightning or loras):
        raise EditForgeError("LoRAs must be fused before quantizing (quantized layers ignore fuse_lora)")
    for lora in loras:
        lora_keys(lora.path)
    spec = resolve_model(model)
    folder = Path(spec.source) if spec.is_local else pipeline_folder(spec.source, _pipeline_class(spec))
    lightning = options.lightning
    if lightning and spec.fused_lightning and not options.force:
        raise EditForgeError(f"{model} already has Lightning {spec.fused_lightning}-step fused in; drop `lightning`")
    if options.lightning_path and not lightning:
        raise EditForgeError("`lightning_path` needs `lightning=4` or `lightning=8` (the steps it was distilled for)")
    lightning_file = find_lightning(spec, lightning, path=options.lightning_path, force=options.force) \
        if lightning else None
    # measured for the model's own transformer, whole on the GPU or offloaded: not a single file, not swapped
    unmeasured = options.skip_memory_check or options.blocks_to_swap or options.transformer
    if device.startswith("cuda") and torch_dtype == torch.bfloat16 and not unmeasured:
        check_fits(spec.family, transformer_config(folder), options.quantize, options.offload,
                   torch.cuda.get_device_properties(torch.device(device)).total_memory)
    compile = device.startswith("cuda") if options.compile is None else options.compile
    files = tuple(single_file.inspect(component, path, folder) for component, path in
                  (("transformer", options.transformer), ("text_encoder", options.text_encoder), ("vae", options.vae))
                  if path)
    if options.blocks_to_swap and any(f.is_gguf for f in files) and not (lightning_file or loras):
        raise EditForgeError("`blocks_to_swap` swaps plain, int8 and fp8 weights, not GGUF ones (give a "
                             ".safetensors `transformer`)")
    return LoadPlan(model=model, spec=spec, folder=folder, options=options, lightning_file=lightning_file, loras=loras,
                    dtype=torch_dtype, device=device, compile=compile, files=files)


def find_lightning(spec: ModelSpec, steps: int, *, path=None, force: bool = False) -> Path:
    """The Lightning file of `spec`'s family for `steps`: `path`, the tiny model's own, or the hub cache's."""
    local = Path(spec.source) / TINY_LIGHTNING_DIR if spec.is_local else None
    return lightning_lib.resolve_file(spec.family, steps, path=path, local_dir=local, force=force)


def build_pipeline(plan: LoadPlan):
    """Load what `plan` names: Lightning scheduler -> LoRAs (checked) -> fuse -> quantize -> device/offload."""
    options = plan.options
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
            load_lora(pipe, lora, name, strict=options.strict_lora)
            adapters[name] = lora.scale
    activate_and_fuse(pipe, adapters, fuse=options.fuse)

    device = plan.device
    if options.quantize:
        quantize_transformer(pipe.transformer, options.quantize, device)
    if options.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif options.offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    elif options.blocks_to_swap:  # the transformer is still on the CPU: only its unswapped part goes over
        for name, component in pipe.components.items():
            if isinstance(component, torch.nn.Module) and name != "transformer":
                component.to(device)
        pipe.transformer.requires_grad_(False)  # swapping moves frozen weights; generation trains nothing
        swap_blocks(pipe.transformer, options.blocks_to_swap, device)
    else:
        pipe.to(device)
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    fast = apply_fast_path(pipe, device=device, attention=options.attention, compile=plan.compile,
                           reuse_embeddings=options.reuse_embeddings)
    setattr(pipe, INFO_ATTRIBUTE, plan.info(fast))
    return pipe


def build_encoders(plan: LoadPlan):
    """The pipeline without its transformer (text encoder, VAE, processor, scheduler) on the plan's device: what
    encoding a dataset needs. Training caches with it and frees the text encoder before `load_transformer`, so the
    two never share the GPU. Takes no LoRA, Lightning or quantization (they act on the transformer)."""
    pipe = _from_pretrained(plan, without=("transformer",))
    fix_mrope_positions(pipe.text_encoder)
    pipe.to(plan.device)
    pipe.set_progress_bar_config(disable=True)
    setattr(pipe, INFO_ATTRIBUTE, plan.info())
    return pipe


def load_transformer(plan: LoadPlan, device: str | None = None):
    """The plan's transformer alone (its single file, else the folder's), on `device` (default: the plan's)."""
    from diffusers import QwenImageTransformer2DModel

    file = next((f for f in plan.files if f.component == "transformer"), None)
    with no_progress_bars():
        if file is not None:
            transformer = single_file.load_component(file, plan.folder, plan.dtype, keep_quantized=plan.keeps_gguf)
        else:
            transformer = QwenImageTransformer2DModel.from_pretrained(plan.folder, subfolder="transformer",
                                                                      dtype=plan.dtype)
    return transformer.to(device or plan.device)


def resolve_device(device: str | None) -> str:
    """`device` checked against what this machine has (default: cuda if present)."""
    if device is None:
        return default_device()
    try:
        kind = torch.device(device)
    except (RuntimeError, ValueError):
        raise EditForgeError(f"`device` {device}: not a device; use cpu, cuda or cuda:N") from None
    if kind.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise EditForgeError(f"`device` {device}: PyTorch sees no CUDA GPU here (torch {torch.__version__}, "
                                 f"{build}); use `device=cpu`, or install a CUDA build of torch")
        if kind.index is not None and kind.index >= torch.cuda.device_count():
            raise EditForgeError(f"`device` {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                                 f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    elif kind.type != "cpu":
        raise EditForgeError(f"`device` {device}: EditForge runs on cpu or cuda")
    return device


def _resolve_dtype(dtype, device: str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise EditForgeError(f"`dtype` must be bf16 or fp32, not {dtype}"
                             + (" (Qwen-Image is made for bf16; float16's narrow range can overflow)"
                                if dtype in ("fp16", "float16") else ""))
    return DTYPES[dtype]


def transformer_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "transformer" / "config.json").read_text())
    except (OSError, ValueError):
        return {}  # no readable config: loading says what is wrong with the folder


def _pipeline_class(spec: ModelSpec):
    import diffusers

    return getattr(diffusers, spec.family.pipeline_class)


def _from_pretrained(plan: LoadPlan, without: tuple[str, ...] = ()):
    allow_processor_without_video()
    # Loading a 20B model prints a wall of progress bars and notices; keep the user's terminal readable.
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    try:
        with no_progress_bars():
            components = {file.component: single_file.load_component(file, plan.folder, plan.dtype,
                                                                     keep_quantized=plan.keeps_gguf)
                          for file in plan.files if file.component not in without}
            components.update(dict.fromkeys(without))  # None: diffusers leaves the component out
            return _pipeline_class(plan.spec).from_pretrained(plan.folder, dtype=plan.dtype, **components)
    except OSError as exc:
        raise EditForgeError(f"could not load the pipeline folder {plan.folder}: {str(exc).splitlines()[0]}") from exc


def quantize_transformer(transformer: torch.nn.Module, kind: str, device: str | None = None) -> None:
    """Quantization of the (already fused) transformer's weights: int8 via optimum-quanto, fp8 via torchao, in the
    recipe of the `device` it will run on (default: where it is; block swap and loading quantize on the CPU): on
    GPUs with fp8 matmuls the activations too (`fp8_config`)."""
    try:
        if kind == "int8":
            from optimum.quanto import freeze, qint8, quantize

            quantize(transformer, weights=qint8)
            freeze(transformer)
        else:
            from torchao.quantization import quantize_

            quantize_(transformer, fp8_config(str(device or next(transformer.parameters()).device)))
    except ImportError as exc:
        raise EditForgeError(f"`quantize` {kind} needs the quant extra: pip install 'editforge[quant]' ({exc})") from exc


def fp8_config(device: str):
    """torchao's fp8 recipe for `device`: fp8 matmuls where the GPU has them (compute capability 8.9 and up:
    Ada, Hopper and newer), which is where fp8 is faster; elsewhere (CPU, older GPUs) fp8 weights only,
    which saves memory."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Float8WeightOnlyConfig

    capability = cuda_capability(device)
    return Float8DynamicActivationFloat8WeightConfig() if capability and capability >= (8, 9) else Float8WeightOnlyConfig()
