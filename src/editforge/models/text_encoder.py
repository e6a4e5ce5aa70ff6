"""Fixes for the Qwen2.5-VL text encoder and its processor under transformers 5.x.

1. mRoPE positions. transformers >= 5.3 gives image tokens their 3-D (temporal, height, width) rotary
   positions only when `mm_token_type_ids` is passed to the model. diffusers' Qwen-Image Edit pipelines
   don't pass it, so image tokens silently get 1-D text positions: prompt embeddings then differ from the
   ones the model was trained with. `fix_mrope_positions` installs a forward pre-hook on the text encoder
   that fills `mm_token_type_ids` from `input_ids`, so every caller (EditForge, a bare diffusers pipeline
   built from the same components, the trainer's cache) gets the right positions.
2. The processor. transformers 5.x insists on a video processor, which needs torchvision. Qwen-Image
   never feeds video, so when torchvision is missing the processor is built and loaded without one.
"""

from __future__ import annotations

import importlib.util

import torch

_HOOK_FLAG = "_editforge_mrope_hook"


def mm_token_type_ids(input_ids: torch.Tensor, image_token_id: int, video_token_id: int) -> torch.Tensor:
    """0 for text, 1 for image tokens, 2 for video tokens: what transformers' processor would return."""
    types = torch.zeros_like(input_ids, dtype=torch.int)
    types[input_ids == image_token_id] = 1
    types[input_ids == video_token_id] = 2
    return types


def fix_mrope_positions(text_encoder: torch.nn.Module) -> torch.nn.Module:
    """Make `text_encoder` compute 3-D image positions even when the caller omits `mm_token_type_ids`."""
    if getattr(text_encoder, _HOOK_FLAG, False):
        return text_encoder
    config = text_encoder.config
    image_token_id, video_token_id = config.image_token_id, config.video_token_id

    def fill_token_types(module, args, kwargs):
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        has_visual = kwargs.get("image_grid_thw") is not None or kwargs.get("video_grid_thw") is not None
        if input_ids is not None and has_visual and kwargs.get("mm_token_type_ids") is None:
            kwargs["mm_token_type_ids"] = mm_token_type_ids(input_ids, image_token_id, video_token_id)
        return args, kwargs

    text_encoder.register_forward_pre_hook(fill_token_types, with_kwargs=True)
    setattr(text_encoder, _HOOK_FLAG, True)
    return text_encoder


def allow_processor_without_video() -> None:
    """Let Qwen2-VL processors be built and loaded without a video processor when torchvision is absent."""
    if importlib.util.find_spec("torchvision") is not None:
        return
    from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor

    for cls in (Qwen2VLProcessor, Qwen2_5_VLProcessor):
        if getattr(cls, "_editforge_image_only", False):
            continue
        original = cls.get_attributes.__func__
        cls.get_attributes = classmethod(lambda c, _orig=original: [a for a in _orig(c) if a != "video_processor"])
        cls._editforge_image_only = True
