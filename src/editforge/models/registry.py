"""The model families EditForge knows, their defaults, and how a `--model` string resolves.

A family is one diffusers pipeline class plus the facts a user should not have to remember: its hub id,
default steps and cfg, how inputs are sized, and which Lightning LoRA belongs to it. Every family has a
tiny offline twin with the same classes and random weights (see `editforge.models.tiny`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from editforge.errors import EditForgeError

LIGHTNING_REPO = "lightx2v/Qwen-Image-Lightning"

# The scheduler config the Qwen-Image checkpoints ship with (scheduler/scheduler_config.json).
QWEN_IMAGE_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}


# The most input images a Qwen-Image-Edit model takes (EditPlus prompts name them "Picture 1" to "Picture 3").
# The synth workbook has as many reference slots.
MAX_INPUT_IMAGES = 3


@dataclass(frozen=True)
class Family:
    """One model family and the rules that belong to it. Modules ask the family (`family_of(pipe)` in
    `editforge.models.info`), never its name, so a new family is one entry here plus its tiny twin."""

    name: str
    hub_id: str
    pipeline_class: str  # diffusers class name
    max_images: int  # 0: text-to-image; 1: Edit; 3: EditPlus (2509, 2511)
    # The fewest control images a training sample may have. Edit v1's prompt template always holds one
    # image slot (`<|vision_start|><|image_pad|><|vision_end|>`), so its text-only samples cannot be
    # encoded; EditPlus adds one "Picture N:" slot per image and encodes a text-only prompt as well.
    min_training_images: int
    steps: int  # the model card's defaults: steps, true CFG and its negative prompt
    cfg: float
    max_pixels: int  # output / VAE area
    condition_pixels: int | None  # VL-encoder area per image (EditPlus only)
    prompt_drop_tokens: int  # template prefix tokens the pipeline drops from the text embedding
    # Text tokens the pipeline call keeps (its `max_sequence_length`; None: the pipeline's encode_prompt
    # ignores it). Training caches and previews encode with the same limit.
    prompt_max_tokens: int | None
    lightning_files: Mapping[int, str] = field(default_factory=dict)  # steps -> file in lightning_repo
    lightning_repo: str = LIGHTNING_REPO
    # What tells this family's checkpoints from another family's of the same pipeline class, in the
    # transformer's config.json (a missing key reads as False, diffusers' default). Edit-2511's
    # `zero_cond_t`: the transformer gives the condition (control) tokens timestep 0.
    transformer_config: Mapping[str, Any] = field(default_factory=dict)
    negative_prompt: str = " "  # the model cards' negative prompt; diffusers runs true CFG only with one
    aitoolkit_arch: str | None = None  # ai-toolkit's `arch` for this model (dataset export)

    @property
    def is_edit(self) -> bool:
        return self.max_images > 0

    @property
    def image_counts(self) -> range:
        """How many input images a generation (and a training preview) takes."""
        return range(1, self.max_images + 1) if self.is_edit else range(0, 1)

    @property
    def training_image_counts(self) -> range:
        """How many control images a training sample may have."""
        return range(self.min_training_images, self.max_images + 1)

    @property
    def takes_image_list(self) -> bool:
        """EditPlus takes `image=[...]`; Edit v1 takes one `image=`."""
        return self.max_images > 1

    @property
    def lightning_model(self) -> str | None:
        """The model part of its Lightning files' names (`Qwen-Image-Edit-2509` in
        `Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors`): how a Lightning file names its family."""
        names = {parse_lightning_name(f)[0] for f in self.lightning_files.values()}
        if len(names) > 1:
            raise ValueError(f"{self.name}: Lightning files name several models: {sorted(names)}")
        return names.pop() if names else None

    def matches(self, pipeline_class: str, transformer_config: Mapping[str, Any]) -> bool:
        return self.pipeline_class == pipeline_class and all(
            transformer_config.get(key, False) == value for key, value in self.transformer_config.items())


def count_text(counts: range, noun: str = "image") -> str:
    """`range(1, 4)` -> "1 to 3 images", `range(1, 2)` -> "one image", `range(0, 1)` -> "no images"."""
    low, high = counts.start, counts.stop - 1
    if high == 0:
        return f"no {noun}s"
    if low == high:
        return f"one {noun}" if low == 1 else f"{low} {noun}s"
    return f"{low} to {high} {noun}s"


# lightx2v's file names: MODEL-Lightning-{4,8}steps-V<version>[-bf16|-fp32].safetensors, in a folder or not.
LIGHTNING_NAME = re.compile(
    r"(?P<model>.+)-Lightning-(?P<steps>\d+)steps-V\d+(?:\.\d+)*(?:-(?:bf16|fp32))?\.safetensors", re.IGNORECASE)


def parse_lightning_name(filename: str) -> tuple[str, int] | None:
    """(model, steps) from a Lightning file name, or None when the name is not in lightx2v's scheme."""
    match = LIGHTNING_NAME.fullmatch(Path(filename).name)
    return (match["model"], int(match["steps"])) if match else None


def _lightning(model: str, tail: str, folder: str = "") -> dict[int, str]:
    return {steps: f"{folder}{model}-Lightning-{steps}steps-{tail}.safetensors" for steps in (4, 8)}


_QWEN_IMAGE = Family(
    name="qwen-image",
    hub_id="Qwen/Qwen-Image",
    pipeline_class="QwenImagePipeline",
    max_images=0,
    min_training_images=0,
    steps=50,
    cfg=4.0,
    max_pixels=1328 * 1328,
    condition_pixels=None,
    prompt_drop_tokens=34,
    prompt_max_tokens=512,
    lightning_files=_lightning("Qwen-Image", "V2.0"),
)
_EDIT_2509 = Family(
    name="qwen-image-edit-2509",
    hub_id="Qwen/Qwen-Image-Edit-2509",
    pipeline_class="QwenImageEditPlusPipeline",
    max_images=MAX_INPUT_IMAGES,
    min_training_images=0,
    steps=40,
    cfg=4.0,
    max_pixels=1024 * 1024,
    condition_pixels=384 * 384,
    prompt_drop_tokens=64,
    prompt_max_tokens=None,
    lightning_files=_lightning("Qwen-Image-Edit-2509", "V1.0-bf16", folder="Qwen-Image-Edit-2509/"),
    transformer_config={"zero_cond_t": False},
    aitoolkit_arch="qwen_image_edit_plus",
)
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        _QWEN_IMAGE,
        # Qwen-Image's December 2025 weights: the same pipeline, architecture and transformer config (so a
        # folder of it without EditForge's editforge.json reads as Qwen-Image), its own Lightning LoRAs:
        # lightx2v/Qwen-Image-2512-Lightning holds Qwen-Image-2512-Lightning-{4,8}steps-V1.0-{bf16,fp32}
        # at its top level (checked against published download links and workflows, 2026).
        replace(_QWEN_IMAGE, name="qwen-image-2512", hub_id="Qwen/Qwen-Image-2512",
                lightning_files=_lightning("Qwen-Image-2512", "V1.0-bf16"),
                lightning_repo="lightx2v/Qwen-Image-2512-Lightning"),
        Family(
            name="qwen-image-edit",
            hub_id="Qwen/Qwen-Image-Edit",
            pipeline_class="QwenImageEditPipeline",
            max_images=1,
            min_training_images=1,
            steps=50,
            cfg=4.0,
            max_pixels=1024 * 1024,
            condition_pixels=None,
            prompt_drop_tokens=64,
            prompt_max_tokens=None,
            lightning_files=_lightning("Qwen-Image-Edit", "V1.0-bf16"),
            aitoolkit_arch="qwen_image_edit",
        ),
        _EDIT_2509,
        # Edit-2509's pipeline (EditPlus) with a transformer that keeps the condition tokens at timestep 0
        # (`zero_cond_t`); diffusers does that inside the transformer, from `img_shapes`, so generation and
        # training pass the same arguments as for 2509. Its Lightning LoRAs are not in
        # lightx2v/Qwen-Image-Lightning but in their own repo, at the top level:
        # Qwen-Image-Edit-2511-Lightning-{4,8}steps-V1.0-{bf16,fp32} (checked against the repo's file pages
        # and published download links, 2026), distilled with the same scheduler (shift 3) as the others.
        replace(_EDIT_2509, name="qwen-image-edit-2511", hub_id="Qwen/Qwen-Image-Edit-2511",
                lightning_files=_lightning("Qwen-Image-Edit-2511", "V1.0-bf16"),
                lightning_repo="lightx2v/Qwen-Image-Edit-2511-Lightning",
                transformer_config={"zero_cond_t": True}, aitoolkit_arch="qwen_image_edit_plus_2511"),
    )
}
EDIT_FAMILIES = tuple(name for name, family in FAMILIES.items() if family.is_edit)


def family_for(pipeline_class: str, transformer_config: Mapping[str, Any]) -> Family | None:
    """The family of a checkpoint, from its pipeline class and its transformer's config; None for a pipeline
    EditForge does not know. Of families that cannot be told apart (Qwen-Image and 2512) the first listed."""
    for family in FAMILIES.values():
        if family.matches(pipeline_class, transformer_config):
            return family
    return None


def supported_pipelines() -> str:
    return ", ".join(dict.fromkeys(f.pipeline_class for f in FAMILIES.values()))


def families_text(names=None, *, what=lambda f: "") -> str:
    """`qwen-image-edit (1 control), ...`: family names for help texts, each with `what(family)` if given."""
    return ", ".join(name + (f" ({what(FAMILIES[name])})" if what(FAMILIES[name]) else "")
                     for name in (names or FAMILIES))

# Tiny twins: same classes, random weights. They default to small sizes so demos and tests take seconds.
TINY_PREFIX = "tiny-"
TINY_MAX_PIXELS = 64 * 64
TINY_CONDITION_PIXELS = 56 * 56
TINY_MODELS = {TINY_PREFIX + name: family for name, family in FAMILIES.items()}
# Bump when the tiny architecture changes, so stale caches are rebuilt rather than half-matching.
TINY_VERSION = 2  # 2: non-trivial VAE latents_mean/latents_std


def cache_root() -> Path:
    """Where EditForge keeps what it builds (tiny models, image caches): $EDITFORGE_HOME or ~/.cache/editforge."""
    return Path(os.environ.get("EDITFORGE_HOME", Path.home() / ".cache" / "editforge"))


def tiny_folder(name: str) -> Path:
    return cache_root() / "tiny" / f"{name}-v{TINY_VERSION}"

# Written by EditForge into every pipeline folder it saves (tiny models, `editforge fuse`), so a saved
# folder keeps its family, its size defaults and what was fused into it.
EDITFORGE_META = "editforge.json"


@dataclass(frozen=True)
class ModelSpec:
    """What `--model` resolved to."""

    source: str  # hub id or local folder, as given to from_pretrained
    family: Family
    max_pixels: int
    condition_pixels: int | None
    is_local: bool
    fused: tuple[str, ...] = ()  # LoRAs already fused into a saved folder (for PNG metadata)
    fused_lightning: int | None = None  # Lightning steps already fused into a saved folder


def resolve_model(model: str) -> ModelSpec:
    """Turn a family name, tiny name, hub id or local folder into a `ModelSpec`."""
    if model in FAMILIES:
        family = FAMILIES[model]
        return ModelSpec(family.hub_id, family, family.max_pixels, family.condition_pixels, is_local=False)
    if model in TINY_MODELS:
        from editforge.models.tiny import tiny_model_dir

        return spec_for_folder(tiny_model_dir(model))
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise EditForgeError(f"`model` {model}: expected a pipeline folder (with model_index.json), got a file")
        return spec_for_folder(path)
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        return spec_for_hub_id(model)
    raise EditForgeError(
        f"`model` {model}: no such folder, and not a family ({', '.join(FAMILIES)}), "
        f"tiny model ({', '.join(TINY_MODELS)}) or hub id (owner/name)"
    )


def spec_for_folder(path: Path) -> ModelSpec:
    index = path / "model_index.json"
    if not index.is_file():
        raise EditForgeError(f"`model` {path}: not a diffusers pipeline folder (no model_index.json)")
    try:
        class_name = json.loads(index.read_text())["_class_name"]
    except (ValueError, KeyError) as exc:
        raise EditForgeError(f"{index} is not a valid model_index.json ({exc})") from exc
    meta = _read_json(path / EDITFORGE_META, "delete it or fix it")
    family = FAMILIES.get(meta.get("family")) or family_for(class_name, _read_json(path / "transformer" / "config.json"))
    if family is None or family.pipeline_class != class_name:
        raise EditForgeError(f"`model` {path}: {class_name} is not a Qwen-Image pipeline EditForge supports "
                             f"({supported_pipelines()})")
    return ModelSpec(
        source=str(path),
        family=family,
        max_pixels=meta.get("max_pixels", family.max_pixels),
        condition_pixels=meta.get("condition_pixels", family.condition_pixels),
        is_local=True,
        fused=tuple(meta.get("fused", ())),
        fused_lightning=meta.get("lightning"),
    )


def _read_json(path: Path, fix: str = "is the folder complete?") -> dict:
    """A JSON file of a pipeline folder, {} when it is not there."""
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError as exc:
        raise EditForgeError(f"{path} is not valid JSON ({exc}); {fix}") from exc


def spec_for_hub_id(repo_id: str) -> ModelSpec:
    for family in FAMILIES.values():
        if family.hub_id.lower() == repo_id.lower():
            return ModelSpec(repo_id, family, family.max_pixels, family.condition_pixels, is_local=False)
    # An unknown repo (a fine-tune, a mirror): its model_index.json says which pipeline it is, and its
    # transformer's config which family of that pipeline.
    from editforge.models.hub import hub_file

    def fetch(filename: str) -> Path:
        return hub_file(repo_id, filename, what=f"`model` {repo_id}", instead=f"download it where there is "
                        f"internet (`hf download {repo_id}`) or pass `model` FOLDER")

    index = fetch("model_index.json")
    fetch("transformer/config.json")
    spec = spec_for_folder(index.parent)
    return ModelSpec(repo_id, spec.family, spec.max_pixels, spec.condition_pixels, is_local=False)
