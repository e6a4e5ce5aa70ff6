"""The published full-size Qwen-Image pipelines, built on the fake GPU: real classes and shapes, no data.

The configs are the published config.json values (`editforge.benchmark.architectures`). The tokenizer and
processor are the tiny models' (the real ones are a download): token ids do not change any cost, and image
token counts come from the processor's image grid, which is the real rule. Only the number of *text*
tokens differs from the real tokenizer's; each plan row states how many text tokens it ran with.
"""

from __future__ import annotations

import torch

from editforge.benchmark.architectures import FULL_TEXT, FULL_TRANSFORMER, FULL_VAE, FULL_VISION, FULL_VOCAB
from editforge.models.info import ATTRIBUTE as INFO_ATTRIBUTE, ModelInfo
from editforge.models.registry import FAMILIES, Family
from editforge.models.text_encoder import fix_mrope_positions
from editforge.plan.fake import FakeGPU

DTYPE = torch.bfloat16


def transformer(gpu: FakeGPU, family: Family | str = "qwen-image-edit-2509", **overrides):
    """The published transformer of `family` (its distinguishing config, e.g. Edit-2511's `zero_cond_t`);
    `overrides` change config values (`num_layers=2` for a short one)."""
    from diffusers import QwenImageTransformer2DModel

    family = FAMILIES[family] if isinstance(family, str) else family
    config = {**FULL_TRANSFORMER, **family.transformer_config, **overrides}
    return gpu.build(lambda: QwenImageTransformer2DModel(**config), DTYPE)


def vae(gpu: FakeGPU):
    from diffusers import AutoencoderKLQwenImage

    return gpu.build(lambda: AutoencoderKLQwenImage(**FULL_VAE), DTYPE)


def text_encoder(gpu: FakeGPU, tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=dict(FULL_TEXT, vocab_size=FULL_VOCAB), vision_config=FULL_VISION, vocab_size=FULL_VOCAB,
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    return gpu.build(lambda: Qwen2_5_VLForConditionalGeneration(config), DTYPE)


def pipeline(gpu: FakeGPU, family: Family | str, *, tiny: bool = False):
    """A full-size pipeline of `family` on the fake GPU, as `load_pipeline` hands it over with Lightning
    (mRoPE fix, the distillation scheduler, no progress bars). `tiny`: the offline tiny model's shapes
    instead (what the tests run, in seconds)."""
    import diffusers

    from editforge.models import lightning
    from editforge.models import tiny as tiny_models
    from editforge.models.text_encoder import allow_processor_without_video

    family = FAMILIES[family] if isinstance(family, str) else family
    allow_processor_without_video()
    with gpu.paused():
        tokenizer = tiny_models.build_tokenizer()
        processor = tiny_models.build_processor(tokenizer) if family.is_edit else None
    if tiny:
        components = dict(transformer=gpu.build(lambda: tiny_models.build_transformer(family), DTYPE),
                          vae=gpu.build(tiny_models.build_vae, DTYPE),
                          text_encoder=gpu.build(lambda: tiny_models.build_text_encoder(tokenizer), DTYPE))
    else:
        components = dict(transformer=transformer(gpu, family), vae=vae(gpu), text_encoder=text_encoder(gpu, tokenizer))
    components["text_encoder"] = fix_mrope_positions(components["text_encoder"])
    # Lightning's scheduler: synth's default (8 steps, cfg 1); the step count does not change a step's cost
    pipe = getattr(diffusers, family.pipeline_class)(
        **components, tokenizer=tokenizer, scheduler=lightning.scheduler(),
        **({"processor": processor} if processor is not None else {}))
    pipe.set_progress_bar_config(disable=True)
    setattr(pipe, INFO_ATTRIBUTE, ModelInfo(family.hub_id, family, family.max_pixels, family.condition_pixels,
                                            lightning=8, dtype="bf16"))
    return pipe
