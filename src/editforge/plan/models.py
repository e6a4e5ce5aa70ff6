"""The published full-size Qwen-Image pipelines, built on the fake GPU: real classes and shapes, no data.

The configs are the published config.json values (`editforge.benchmark.architectures`). The tokenizer and
processor are the tiny models' (the real ones are a download): token ids do not change any cost, and image
token counts come from the processor's image grid, which is the real rule. Only the number of *text*
tokens differs from the real tokenizer's; each plan row states how many text tokens it ran with.
"""

from __future__ import annotations

import torch

from editforge.benchmark.architectures import FULL_TEXT, FULL_TRANSFORMER, FULL_VAE, FULL_VISION, FULL_VOCAB
from editforge.models.registry import FAMILIES, Family
from editforge.plan.fake import FakeGPU

DTYPE = torch.bfloat16


def transformer(gpu: FakeGPU, *, num_layers: int | None = None):
    from diffusers import QwenImageTransformer2DModel

    config = dict(FULL_TRANSFORMER, **({"num_layers": num_layers} if num_layers else {}))
    return gpu.build(lambda: QwenImageTransformer2DModel(**config), DTYPE)


def vae(gpu: FakeGPU):
    from diffusers import AutoencoderKLQwenImage

    return gpu.build(lambda: AutoencoderKLQwenImage(**FULL_VAE), DTYPE)


def text_encoder(gpu: FakeGPU, tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from editforge.models.text_encoder import fix_mrope_positions

    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=dict(FULL_TEXT, vocab_size=FULL_VOCAB), vision_config=FULL_VISION, vocab_size=FULL_VOCAB,
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
    )
    return fix_mrope_positions(gpu.build(lambda: Qwen2_5_VLForConditionalGeneration(config), DTYPE))


def pipeline(gpu: FakeGPU, family: Family | str):
    """A full-size pipeline of `family` on the fake GPU, as `load_pipeline` hands it over with Lightning
    (mRoPE fix, the distillation scheduler, no progress bars)."""
    import diffusers

    from editforge.models import lightning
    from editforge.models.text_encoder import allow_processor_without_video
    from editforge.models.tiny import build_processor, build_tokenizer

    family = FAMILIES[family] if isinstance(family, str) else family
    allow_processor_without_video()
    with gpu.paused():
        tokenizer = build_tokenizer()
        processor = build_processor(tokenizer) if family.is_edit else None
    # Lightning's scheduler: synth's default (8 steps, cfg 1); the step count does not change a step's cost
    components = dict(transformer=transformer(gpu), vae=vae(gpu), text_encoder=text_encoder(gpu, tokenizer),
                      tokenizer=tokenizer, scheduler=lightning.scheduler())
    if processor is not None:
        components["processor"] = processor
    pipe = getattr(diffusers, family.pipeline_class)(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe
