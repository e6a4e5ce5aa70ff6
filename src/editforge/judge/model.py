"""The judge's model: a Qwen2.5-VL with its language-model head, and the processor that feeds it.

    judge = judge_from_pipeline(pipe)                        # the pipeline's own text encoder: no new weights
    judge = load_judge("qwen-image-edit-2509")               # only the text encoder and processor of a pipeline
    judge = load_judge(judge_model="Qwen/Qwen2.5-VL-3B-Instruct")   # another Qwen2.5-VL, for a different judge

The Qwen-Image pipelines ship the whole Qwen2.5-VL-7B-Instruct as their text encoder, `lm_head` included
(the published shards hold ~8.29B parameters; without the head they would be ~7.75B), so it can answer
questions. A folder whose checkpoint lacks the head would still load: transformers reports the head as a
missing key and initialises it at random, and every answer would be noise. `check_head` refuses that
before anything is judged.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from editforge.errors import EditForgeError
from editforge.models.registry import TINY_MAX_PIXELS

HEAD_KEY = "lm_head.weight"
# The area each image gets in the judge's vision encoder: Edit-2509's own VL-encoder area (384x384), sides
# multiples of 28 (14-pixel patches merged 2x2). Tiny models: Qwen2-VL's minimum, 56x56.
JUDGE_PIXELS = 384 * 384
TINY_JUDGE_PIXELS = 56 * 56
PATCH_MULTIPLE = 28


@dataclass
class Judge:
    model: Any            # Qwen2_5_VLForConditionalGeneration (with lm_head)
    processor: Any        # Qwen2VLProcessor / Qwen2_5_VLProcessor
    name: str             # the model it came from, for the journal: another judge judges every row again
    pixels: int = JUDGE_PIXELS

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def check_head(folder: str | Path) -> None:
    """Raise unless the checkpoint in `folder` holds the language-model head (or ties it to the input
    embeddings, which it holds): without it transformers initialises the head at random."""
    folder = Path(folder)
    config = _read_json(folder / "config.json")
    tied = config.get("tie_word_embeddings", (config.get("text_config") or {}).get("tie_word_embeddings", False))
    keys = checkpoint_keys(folder)
    if any(k == HEAD_KEY or k.endswith("." + HEAD_KEY) for k in keys):
        return
    if tied and any(k.endswith("embed_tokens.weight") for k in keys):
        return
    raise EditForgeError(f"the text encoder in {folder} has no {HEAD_KEY} in its weights (transformers would "
                         "initialise it at random and every judgement would be noise); pass --judge-model with a "
                         "Qwen2.5-VL Instruct model")


def checkpoint_keys(folder: Path) -> set[str]:
    """The tensor names of a transformers checkpoint folder, read from its index or safetensors headers."""
    from safetensors import safe_open

    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return set(_read_json(index).get("weight_map", {}))
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise EditForgeError(f"no safetensors weights in {folder}; the judge needs a Qwen2.5-VL checkpoint folder")
    keys: set[str] = set()
    for file in files:
        with safe_open(str(file), "pt") as handle:
            keys.update(handle.keys())
    return keys


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EditForgeError(f"unreadable {path.name} in {path.parent} ({exc})") from exc


def judge_from_pipeline(pipe, *, pixels: int | None = None) -> Judge:
    """The judge made of `pipe`'s own text encoder and processor: the same module objects, nothing loaded."""
    from editforge.models.info import model_info

    encoder, processor = getattr(pipe, "text_encoder", None), getattr(pipe, "processor", None)
    if encoder is None or processor is None or not hasattr(encoder, "lm_head"):
        raise EditForgeError(f"{type(pipe).__name__} has no vision-language text encoder to judge with; "
                             "use an edit model or --judge-model")
    check_head(encoder.name_or_path)
    info = model_info(pipe)
    return Judge(encoder, processor, info.model, pixels or default_pixels(info.max_pixels))


@dataclass(frozen=True)
class JudgeSource:
    """Where a judge's weights and processor are, checked (head included), nothing loaded yet."""

    name: str
    weights: Path
    processor: Path
    max_pixels: int | None  # the pipeline's output area (None: a separate judge model)


def find_judge(model: str | None = None, *, judge_model: str | None = None) -> JudgeSource:
    """`judge_model` (a Qwen2.5-VL folder or hub id) if given, else the text encoder and processor of pipeline
    `model` (family, tiny name, hub id or folder); the head checked, no weights loaded."""
    if (model is None) == (judge_model is None):
        raise EditForgeError("give the judge one of `model` (a pipeline whose text encoder judges) or `judge_model`")
    if judge_model is not None:
        root = _judge_model_folder(judge_model)
        source = JudgeSource(judge_model, root, root, None)
    else:
        root, max_pixels = _pipeline_folder(model)
        source = JudgeSource(model, root / "text_encoder", root / "processor", max_pixels)
    check_head(source.weights)
    return source


def load_judge(model: str | None = None, *, judge_model: str | None = None, device: str | None = None,
               dtype: str | None = None, pixels: int | None = None) -> Judge:
    """Load the judge `find_judge` finds — for a pipeline, its text encoder and processor, not the rest."""
    return load_judge_from(find_judge(model, judge_model=judge_model), device=device, dtype=dtype, pixels=pixels)


def load_judge_from(source: JudgeSource, *, device: str | None = None, dtype: str | None = None,
                    pixels: int | None = None) -> Judge:
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from editforge.models.loading import _resolve_dtype, resolve_device
    from editforge.models.text_encoder import allow_processor_without_video, fix_mrope_positions
    from editforge.quiet import no_progress_bars

    device = resolve_device(device)
    allow_processor_without_video()
    with no_progress_bars():
        encoder = Qwen2_5_VLForConditionalGeneration.from_pretrained(source.weights,
                                                                     dtype=_resolve_dtype(dtype, device))
        processor = AutoProcessor.from_pretrained(source.processor)
    fix_mrope_positions(encoder)
    encoder.to(device).eval()
    return Judge(encoder, processor, source.name, pixels or default_pixels(source.max_pixels))


def default_pixels(max_pixels: int | None) -> int:
    """The judge's image area for a pipeline of output area `max_pixels` (None: a separate judge model)."""
    return TINY_JUDGE_PIXELS if max_pixels is not None and max_pixels <= TINY_MAX_PIXELS else JUDGE_PIXELS


def _pipeline_folder(model: str) -> tuple[Path, int]:
    from editforge.models.hub import pipeline_folder
    from editforge.models.registry import resolve_model
    import diffusers

    spec = resolve_model(model)
    if not spec.family.is_edit:
        raise EditForgeError(f"`model` {model} is a text-to-image model without an image processor; judge with "
                             "an edit model or --judge-model")
    folder = (Path(spec.source) if spec.is_local
              else pipeline_folder(spec.source, getattr(diffusers, spec.family.pipeline_class)))
    return folder, spec.max_pixels


def _judge_model_folder(judge_model: str) -> Path:
    from editforge.models.hub import snapshot_folder

    folder = Path(judge_model).expanduser()
    if folder.is_dir():
        return folder
    if judge_model.count("/") != 1 or folder.exists():
        raise EditForgeError(f"--judge-model {judge_model}: not a folder, nor a hub id (owner/name)")
    return snapshot_folder(judge_model, what=f"--judge-model {judge_model}")


def judge_size(size: tuple[int, int], pixels: int) -> tuple[int, int]:
    """(width, height) with about `pixels` pixels at the image's aspect, sides multiples of 28 (at least 28)."""
    width, height = size
    scale = math.sqrt(pixels / (width * height))
    return (max(PATCH_MULTIPLE, round(width * scale / PATCH_MULTIPLE) * PATCH_MULTIPLE),
            max(PATCH_MULTIPLE, round(height * scale / PATCH_MULTIPLE) * PATCH_MULTIPLE))
