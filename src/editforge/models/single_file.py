"""Single-file checkpoints: the transformer, text encoder or VAE from the one file a ComfyUI user already has, the
rest of the pipeline from the model's folder.

Read: `.safetensors` in ComfyUI's layouts (diffusers key names, bare or under `model.diffusion_model.` /
`diffusion_model.`; bf16, plain `float8_e4m3fn`, and scaled fp8 with a `scale_weight` / `weight_scale` tensor
per layer, the scaled and "mixed" fp8 files) and GGUF (Q8_0, Q4_0, Q4_K, ... as diffusers reads them). The VAE
file (`qwen_image_vae.safetensors`) has the Wan 2.1 VAE's names, mapped by diffusers' own Wan converter.

diffusers 0.42.1's `from_single_file` knows QwenImageTransformer2DModel but maps its keys as they are (no prefix
stripping, no fp8 scales): EditForge converts the keys and scales itself and hands diffusers the state dict.
`inspect` reads only a file's header, so a wrong file is one line before anything loads.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch

from editforge.errors import EditForgeError

PREFIXES = ("model.diffusion_model.", "diffusion_model.")
SCALES = (".scale_weight", ".weight_scale")  # ComfyUI's scaled fp8 (older) and mixed-precision (newer) names
# Bookkeeping of ComfyUI's fp8 files that no model weight corresponds to: the scaled-fp8 marker, activation
# scales (fp8 matmul inputs, unused when weights are dequantized) and per-layer quantization configs.
IGNORED = re.compile(r"(^scaled_fp8$|\.scale_input$|\.input_scale$|\.comfy_quant$)")
# Qwen2.5-VL as ComfyUI stores it (transformers 4.x names): transformers 5 nests both under `model.`.
TEXT_ENCODER_RENAMES = ((re.compile(r"^visual\."), "model.visual."),
                        (re.compile(r"^model\.(?!language_model\.|visual\.)"), "model.language_model."))
LM_HEAD = "lm_head.weight"  # not in some ComfyUI text-encoder files; the pipelines use hidden states, not logits
# A block of the Wan 2.1 VAE's decoder (`decoder.upsamples.N.`), and one that is a Resample (the last of its stage)
WAN_DECODER_BLOCK = re.compile(r"^decoder\.upsamples\.(\d+)\.")
WAN_RESAMPLE = re.compile(r"^decoder\.upsamples\.(\d+)\.(resample|time_conv)\.")
NAMES = {"vae": "VAE", "text_encoder": "text encoder"}


@dataclass(frozen=True)
class SingleFile:
    """A checked single-file checkpoint for one pipeline component."""

    component: str  # "transformer", "text_encoder" or "vae"
    path: Path
    precision: str  # what the file stores its weights in: "bf16", "fp8", "fp8-scaled", "gguf Q8_0", ...

    @property
    def label(self) -> str:
        return f"{self.path.name} ({self.precision})"

    @property
    def is_gguf(self) -> bool:
        return self.path.suffix.lower() == ".gguf"


def inspect(component: str, path: str | Path, folder: Path) -> SingleFile:
    """`path` checked against `component` of the pipeline in `folder` (its config), from the file's header only."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EditForgeError(f"`{component}` file not found: {path}" if not path.is_dir() else
                             f"`{component}` {path} is a folder; give the single .safetensors or .gguf file "
                             f"(a whole pipeline folder goes to `model`)")
    suffix = path.suffix.lower()
    if suffix not in (".safetensors", ".gguf"):
        raise EditForgeError(f"`{component}` {path}: expected a .safetensors or .gguf file")
    if suffix == ".gguf" and component != "transformer":
        raise EditForgeError(f"`{component}` {path}: GGUF is read for the transformer only; give a .safetensors file")
    try:
        dtypes = _gguf_types(path) if suffix == ".gguf" else _safetensors_dtypes(path)
    except Exception as exc:  # a truncated or foreign file: each reader raises its own kind
        raise EditForgeError(f"`{component}` {path} is not a readable {suffix[1:]} file ({exc})") from None
    if suffix == ".gguf":
        _check_gguf_types(component, path, dtypes)
    names = set(convert_keys(component, dtypes).values())
    expected = expected_keys(component, folder)
    if component == "text_encoder":
        names.add(LM_HEAD)
    missing, unexpected = sorted(expected - names), sorted(names - expected)
    if missing or unexpected:
        what = (f"{len(missing)} of the model's {len(expected)} weights are missing (e.g. {missing[0]})" if missing
                else f"{len(unexpected)} weights are not the model's (e.g. {unexpected[0]})")
        raise EditForgeError(f"`{component}` {path}: {what}; is it a {NAMES.get(component, component)} of the model "
                             f"in {folder}?")
    return SingleFile(component, path, _precision(path, dtypes))


def convert_keys(component: str, keys: Collection[str]) -> dict[str, str]:
    """{file's name: the model's name} of every tensor in `keys` that is a model weight."""
    if component == "vae":
        return vae_names(keys)
    return {key: name for key in keys if (name := convert_key(component, key)) is not None}


def vae_names(keys: Collection[str]) -> dict[str, str]:
    """The diffusers names of a Wan 2.1 VAE file's tensors (ComfyUI's layout; diffusers names pass as they are).

    diffusers' `convert_wan_vae_to_diffusers` maps the real file (2 residual blocks per stage) right, but numbers the
    decoder's blocks as 3 residual blocks and a Resample per stage whatever the file holds. A VAE with fewer (the
    tiny one has 1) is renumbered to that layout first: block N of stage S goes to 4 S + N, its Resample to 4 S + 3
    (the identity on the real file). A VAE of more blocks per stage keeps names the model lacks: `inspect` says so.
    """
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    resamples = sorted({int(m[1]) for key in keys if (m := WAN_RESAMPLE.match(key))})
    per_stage = resamples[0] + 1 if resamples else 4  # residual blocks and the Resample

    def renumbered(key: str) -> str:
        match = WAN_DECODER_BLOCK.match(key)
        if not match:
            return key
        stage, position = divmod(int(match[1]), per_stage)
        index = 4 * stage + (3 if position == per_stage - 1 else position)
        return f"decoder.upsamples.{index}.{key[match.end():]}"

    return {key: name for name, key in convert_wan_vae_to_diffusers({renumbered(key): key for key in keys}).items()}


def convert_key(component: str, key: str) -> str | None:
    """The diffusers / transformers name of a file's tensor; None for scales and bookkeeping."""
    for prefix in PREFIXES:
        key = key.removeprefix(prefix)
    if IGNORED.search(key) or key.endswith(SCALES):
        return None
    if component == "text_encoder":
        for pattern, replacement in TEXT_ENCODER_RENAMES:
            key = pattern.sub(replacement, key)
    return key


def read_state_dict(file: SingleFile, dtype: torch.dtype, *, keep_quantized: bool = False) -> dict[str, torch.Tensor]:
    """The file's weights under the model's names, in `dtype`: scaled fp8 multiplied by its scale (exactly the
    values ComfyUI computes with), GGUF kept as diffusers' quantized parameters with `keep_quantized`, else
    dequantized."""
    raw = _read(file.path)
    state = {}
    for key, name in convert_keys(file.component, raw).items():
        tensor = raw[key]
        scale = next((raw[key.removesuffix(".weight") + s] for s in SCALES
                      if key.endswith(".weight") and key.removesuffix(".weight") + s in raw), None)
        if getattr(tensor, "quant_type", None) is not None and not keep_quantized:
            from diffusers.quantizers.gguf.utils import dequantize_gguf_tensor

            tensor = dequantize_gguf_tensor(tensor)
        if scale is not None:
            tensor = tensor.float() * scale.float().reshape(-1, *[1] * (tensor.dim() - 1)) if scale.numel() > 1 \
                else tensor.float() * scale.float()
        if getattr(tensor, "quant_type", None) is None:
            tensor = tensor.to(dtype)
        state[name] = tensor
    if file.component == "text_encoder" and LM_HEAD not in state:
        state[LM_HEAD] = state["model.language_model.embed_tokens.weight"]
    return state


def load_component(file: SingleFile, folder: Path, dtype: torch.dtype, *, keep_quantized: bool = False):
    """The component built from `folder`'s config with the file's weights (nothing else is read from `folder`)."""
    if file.component == "transformer":
        from diffusers import GGUFQuantizationConfig, QwenImageTransformer2DModel

        quantized = keep_quantized and file.is_gguf
        state = read_state_dict(file, dtype, keep_quantized=quantized)
        config = GGUFQuantizationConfig(compute_dtype=dtype) if quantized else None
        return QwenImageTransformer2DModel.from_single_file(state, config=str(folder), subfolder="transformer",
                                                            torch_dtype=dtype, quantization_config=config)
    model = _empty_model(file.component, folder, dtype)
    model.load_state_dict(read_state_dict(file, dtype), strict=True, assign=True)
    return model.eval()


def expected_keys(component: str, folder: Path) -> set[str]:
    """The component's parameter names, from a copy built on the meta device (no memory, no weights)."""
    return set(_empty_model(component, folder).state_dict())


def _empty_model(component: str, folder: Path, dtype: torch.dtype | None = None):
    """`component` as `folder`'s config makes it, on the meta device: its weights are assigned when it loads."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        if component == "transformer":
            from diffusers import QwenImageTransformer2DModel

            return QwenImageTransformer2DModel.from_config(QwenImageTransformer2DModel.load_config(
                folder / "transformer"))
        if component == "vae":
            from diffusers import AutoencoderKLQwenImage

            return AutoencoderKLQwenImage.from_config(AutoencoderKLQwenImage.load_config(folder / "vae"))
        from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration._from_config(AutoConfig.from_pretrained(folder / "text_encoder"),
                                                               dtype=dtype)


def _read(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix.lower() == ".gguf":
        from diffusers.models.model_loading_utils import load_gguf_checkpoint

        return load_gguf_checkpoint(str(path))
    from safetensors.torch import load_file

    return load_file(str(path))


def _safetensors_dtypes(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return {key: str(fh.get_slice(key).get_dtype()) for key in fh.keys()}


def _gguf_types(path: Path) -> dict[str, str]:
    from gguf import GGUFReader

    return {tensor.name: tensor.tensor_type.name for tensor in GGUFReader(str(path)).tensors}


def _check_gguf_types(component: str, path: Path, types: dict[str, str]) -> None:
    """Every tensor in a type diffusers decodes (Q8_0, Q4_0, the K-quants, ...; not e.g. the IQ2/IQ3 types): else
    diffusers stops at load with a many-line ValueError."""
    from diffusers.quantizers.gguf.utils import SUPPORTED_GGUF_QUANT_TYPES

    readable = {"F32", "F16"} | {t.name for t in SUPPORTED_GGUF_QUANT_TYPES}
    unreadable = {name: t for name, t in types.items() if t not in readable}
    if unreadable:
        kinds = sorted(set(unreadable.values()))
        raise EditForgeError(f"`{component}` {path}: {len(unreadable)} tensor{'s' * (len(unreadable) > 1)} in "
                             f"{', '.join(kinds)} (e.g. {next(iter(unreadable))}), a GGUF type diffusers does not "
                             f"decode (it reads {', '.join(sorted(readable))}); use another quantization of the model")


def _precision(path: Path, dtypes: dict[str, str]) -> str:
    """How the file stores its weights, as users name files: the most common type of its tensors."""
    if path.suffix.lower() == ".gguf":
        quantized = [t for t in dtypes.values() if t not in ("F32", "F16", "BF16")]
        return "gguf " + (max(set(quantized), key=quantized.count) if quantized else "F16")
    if any(key.endswith(SCALES) for key in dtypes):
        return "fp8-scaled"
    stored = [STORAGE.get(t, t.lower()) for t in dtypes.values()]
    return max(set(stored), key=stored.count)


STORAGE = {"BF16": "bf16", "F16": "fp16", "F32": "fp32", "F8_E4M3": "fp8", "F8_E5M2": "fp8-e5m2"}
