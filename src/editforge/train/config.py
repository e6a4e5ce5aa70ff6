"""The training config: one YAML file names everything a run depends on.

`load_config(path, overrides)` reads the YAML, applies `--set key=value` overrides, and validates it with
pydantic. Every error names the dotted key that is wrong (`train.lr: ...`), because a typo in a 40-line YAML
is the most common way a training run fails. `default_config(family)` is what `--print-config` prints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from editforge.errors import EditForgeError
from editforge.inference.sizes import MIN_CONDITION_PIXELS, MIN_PIXELS
from editforge.models.registry import FAMILIES

# Attention (image + text stream) and MLP projections of every QwenImageTransformerBlock. The modulation
# layers (img_mod.1, txt_mod.1) are as large again but run once per sample; add them for more capacity.
DEFAULT_TARGET_MODULES = [
    "to_q", "to_k", "to_v", "to_out.0",
    "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out",
    "img_mlp.net.0.proj", "img_mlp.net.2", "txt_mlp.net.0.proj", "txt_mlp.net.2",
]


# Sections that may be written as their one main value: `model: qwen-image-edit-2509` is `model: {name: ...}`.
SHORTHANDS = {"model": "name"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SampleConfig(Strict):
    """One sample written inline in the config (validation samples, or small training sets)."""

    target: Optional[Path] = None  # the edited image; for validation, the reference shown beside the preview
    controls: list[Path] = Field(default_factory=list, max_length=max(f.max_images for f in FAMILIES.values()))
    instruction: str


class ModelConfig(Strict):
    """`model: NAME` is short for `model: {name: NAME}`; the files replace the named model's components."""

    name: str  # family, tiny model, hub id or local pipeline folder
    transformer: Optional[Path] = None  # a single-file transformer: ComfyUI .safetensors (bf16, fp8, scaled fp8), GGUF
    text_encoder: Optional[Path] = None  # a single-file text encoder (ComfyUI's qwen_2.5_vl_7b*.safetensors)
    vae: Optional[Path] = None  # a single-file VAE (ComfyUI's qwen_image_vae.safetensors)


class DataConfig(Strict):
    source: Optional[Path] = None  # any source editforge.dataset reads (workbook, metadata.csv, folder, JSONL, parquet)
    source_format: Optional[str] = None  # force a reader (diffsynth, musubi, hf, folders, workbook); default: detect
    only_accepted: bool = False  # workbook: only rows accepted in `editforge review`
    allow_outside: bool = False  # accept image paths leaving the source's folder (as `--allow-outside`)
    samples: list[SampleConfig] = Field(default_factory=list)  # inline samples, added to `source`
    max_pixels: Optional[int] = Field(None, ge=MIN_PIXELS)  # target / VAE area; default: the model's inference area
    condition_pixels: Optional[int] = Field(None, ge=MIN_CONDITION_PIXELS)  # Edit-2509 VL-encoder area; default: the model's
    batch_size: int = Field(1, ge=1)
    repeats: int = Field(1, ge=1)
    cache_dir: Optional[Path] = None  # default: <output_dir>/cache


class LoraConfig(Strict):
    rank: int = Field(16, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(DEFAULT_TARGET_MODULES), min_length=1)
    init_from: Optional[Path] = None  # start from an existing LoRA file (its rank/alpha/targets win)


class TrainConfig(Strict):
    steps: int = Field(1000, ge=1)  # optimizer steps
    learning_rate: float = Field(1e-4, gt=0)
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant_with_warmup"
    warmup_steps: int = Field(0, ge=0)
    gradient_accumulation: int = Field(1, ge=1)
    max_grad_norm: float = Field(1.0, gt=0)
    mixed_precision: Literal["bf16", "fp16", "no"] = "bf16"
    gradient_checkpointing: bool = True
    blocks_to_swap: int = Field(0, ge=0)  # transformer blocks whose frozen weights stay in CPU memory between uses
    quantize: Optional[Literal["int8", "fp8"]] = None  # quantize the frozen base; the LoRA trains in full precision
    timestep_sampling: Literal["uniform", "logit_normal", "shift"] = "shift"
    shift: Union[float, Literal["auto"]] = "auto"  # "auto": the inference scheduler's shift for the image size
    logit_mean: float = 0.0
    logit_std: float = Field(1.0, gt=0)

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value):
        return "no" if value is False else value  # YAML reads an unquoted `no` (and `--set ...=no`) as false

    @model_validator(mode="after")
    def _swap_needs_checkpointing(self):
        if self.blocks_to_swap and not self.gradient_checkpointing:
            raise ValueError("blocks_to_swap needs gradient_checkpointing: true (without it autograd keeps every "
                             "swapped block's GPU copy until the backward pass, so nothing is saved)")
        return self

    @field_validator("shift")
    @classmethod
    def _positive_shift(cls, value):
        if value != "auto" and value <= 0:
            raise ValueError("must be a positive number or 'auto'")
        return value


class CheckpointConfig(Strict):
    every: int = Field(250, ge=1)  # optimizer steps between checkpoints
    keep: int = Field(3, ge=1)  # newest checkpoints kept on disk


class ValidationConfig(Strict):
    every: int = Field(250, ge=1)
    samples: list[SampleConfig] = Field(default_factory=list)
    steps: int = Field(20, ge=1)  # denoising steps of each preview
    cfg: float = Field(4.0, ge=1)
    seed: int = 0
    lightning: Optional[Literal[4, 8]] = None  # previews with the family's Lightning LoRA on top, its steps, cfg 1
    judge: bool = False  # score each preview with the judge (editforge.judge): a quality curve beside the loss
    judge_model: Optional[str] = None  # another Qwen2.5-VL to judge with (default: the model's own text encoder)
    judge_device: str = "cpu"  # where the judge runs: the CPU keeps the GPU for training; "cuda" if it has room


class Config(Strict):
    model: ModelConfig
    output_dir: Path
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    log_every: int = Field(10, ge=1)  # optimizer steps between TensorBoard / console logs
    export_format: Literal["diffusers", "comfyui"] = "diffusers"

    @field_validator("model", mode="before")
    @classmethod
    def _model_name(cls, value):
        return {SHORTHANDS["model"]: value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _has_data(self):
        if self.data.source is None and not self.data.samples:
            raise ValueError("data: give data.source (a dataset) or data.samples (inline samples)")
        return self

    @property
    def cache_dir(self) -> Path:
        return self.data.cache_dir or self.output_dir / "cache"

    def check_paths(self) -> None:
        """Every path in the config, checked before anything loads; the message names the key and the path."""
        def where(path: Path) -> str:
            return f"{os.path.abspath(path)}" + ("" if path.is_absolute() else " (relative paths start at "
                                                  "the folder you run from)")

        for key, path in (("output_dir", self.output_dir), ("data.cache_dir", self.data.cache_dir)):
            if path is not None and path.exists() and not path.is_dir():
                raise EditForgeError(f"{key}: {where(path)} is a file; give a folder")
        wanted = [("model.transformer", self.model.transformer), ("model.text_encoder", self.model.text_encoder),
                  ("model.vae", self.model.vae),
                  ("data.source", self.data.source), ("lora.init_from", self.lora.init_from)]
        for section, samples in (("data.samples", self.data.samples), ("validation.samples", self.validation.samples)):
            for i, sample in enumerate(samples):
                wanted.append((f"{section}[{i}].target", sample.target))
                wanted += [(f"{section}[{i}].controls[{j}]", c) for j, c in enumerate(sample.controls)]
        for key, path in wanted:
            if path is not None and not path.exists():
                raise EditForgeError(f"{key}: not found: {where(path)}")

    def check_family(self, family) -> None:
        """What the model family decides, checked before the model loads: previews need its control count
        (a bad preview would otherwise fail hours in, at the first validation)."""
        from editforge.models.registry import count_text

        for i, sample in enumerate(self.validation.samples):
            if len(sample.controls) not in family.image_counts:
                raise EditForgeError(f"validation.samples[{i}]: {family.name} previews need "
                                     f"{count_text(family.image_counts, 'control image')}, this one has "
                                     f"{len(sample.controls)}")


def default_config(family: str = "qwen-image-edit-2509") -> dict:
    """A complete config for `family` with every key at its default, as `--print-config` shows it."""
    if family not in FAMILIES:
        raise EditForgeError(f"`family` must be one of {', '.join(FAMILIES)}, not {family}")
    sample = {"target": "data/edited/0001.png", "instruction": "make the sky red"}
    if FAMILIES[family].is_edit:
        sample["controls"] = ["data/source/0001.png"]
    config = Config(
        model=ModelConfig(name=family), output_dir=Path(f"runs/{family}-lora"),
        data=DataConfig(source=Path("data/metadata.csv")), validation=ValidationConfig(samples=[sample]),
    )
    return config.model_dump(mode="json")


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    path = Path(path)
    if not path.is_file():
        raise EditForgeError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise EditForgeError(f"{path} is not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise EditForgeError(f"{path}: expected a mapping of keys at the top level")
    for override in overrides:
        apply_override(raw, override)
    return validate(raw, str(path))


def apply_override(raw: dict, override: str) -> None:
    """`--set train.learning_rate=2e-4`: the value is parsed as YAML, so numbers, lists and null work."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise EditForgeError(f"`overrides` {override}: expected key=value, e.g. train.steps=500")
    *parents, leaf = key.strip().split(".")
    node = raw
    for part in parents:
        if part in SHORTHANDS and isinstance(node.get(part), str):  # `model: NAME` given, `model.transformer` set
            node[part] = {SHORTHANDS[part]: node[part]}
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise EditForgeError(f"`overrides` {override}: {part} is not a section")
    node[leaf] = yaml.safe_load(text)


def validate(raw: dict, where: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            key = ".".join(str(part) for part in error["loc"]) or "(top level)"
            message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            problems.append(f"{key}: {message}")
        raise EditForgeError(f"{where}: " + "; ".join(problems)) from None
