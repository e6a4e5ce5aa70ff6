"""The real Qwen-Image architectures with random weights, built directly on the benchmark device.

Speed and memory do not depend on the weights' values, so a full-size benchmark needs no download: the
models are created on the meta device (no memory), then each parameter is materialised on the GPU in
bf16. Building in fp32 on the CPU first would need 80 GB of RAM for the 20B transformer alone.
The published config.json values are below; `tiny` uses the tiny offline models' shapes.
"""

from __future__ import annotations

import torch

from editforge.models.registry import FAMILIES, TINY_PREFIX, Family

DEFAULT_FAMILY = "qwen-image-edit-2509"
FULL_TRANSFORMER = dict(
    patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False, axes_dims_rope=(16, 56, 56),
)
FULL_VAE = dict(
    base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, temperal_downsample=[False, True, True],
    latents_mean=[0.0] * 16, latents_std=[1.0] * 16,
)
FULL_TEXT = dict(
    hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
    num_key_value_heads=4, rope_theta=1000000.0,
    rope_scaling={"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"},
)
FULL_VISION = dict(
    depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584, patch_size=14,
    spatial_merge_size=2, temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31],
)
FULL_VOCAB = 152064


def _materialise(model: torch.nn.Module, device: str, dtype: torch.dtype, seed: int) -> torch.nn.Module:
    """Give every meta parameter random values on `device`; buffers (built normally) follow."""
    from accelerate.utils import set_module_tensor_to_device

    generator = torch.Generator(device=device).manual_seed(seed)
    for name, param in list(model.named_parameters()):
        value = torch.empty(param.shape, device=device, dtype=dtype)
        if param.dim() > 1:
            value.normal_(0.0, 0.02, generator=generator)
        else:
            value.fill_(1.0 if name.endswith("weight") else 0.0)  # norms at 1, biases at 0
        set_module_tensor_to_device(model, name, device, value=value)
    return model.to(device)


def _empty(build):
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        return build()


def full_transformer(device: str | None = None, dtype=torch.bfloat16, family: Family = FAMILIES[DEFAULT_FAMILY]):
    """The family's transformer at full size (with its distinguishing config, e.g. Edit-2511's `zero_cond_t`)."""
    from diffusers import QwenImageTransformer2DModel

    model = _empty(lambda: QwenImageTransformer2DModel(**FULL_TRANSFORMER, **family.transformer_config))
    return model if device is None else _materialise(model, device, dtype, seed=0)


def full_vae(device: str | None = None, dtype=torch.bfloat16):
    from diffusers import AutoencoderKLQwenImage

    model = _empty(lambda: AutoencoderKLQwenImage(**FULL_VAE))
    return model if device is None else _materialise(model, device, dtype, seed=1)


def full_text_encoder(tokenizer, device: str | None = None, dtype=torch.bfloat16):
    """Qwen2.5-VL-7B's shapes. Special-token ids are the (tiny) tokenizer's: token ids do not change cost."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=dict(FULL_TEXT, vocab_size=FULL_VOCAB),
        vision_config=FULL_VISION,
        vocab_size=FULL_VOCAB,
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    model = _empty(lambda: Qwen2_5_VLForConditionalGeneration(config))
    return model if device is None else _materialise(model, device, dtype, seed=2)


def build_pipeline(size: str, device: str, dtype: torch.dtype, family: Family = FAMILIES[DEFAULT_FAMILY]):
    """An edit pipeline of `family` and `size` ("tiny" or "full") with random weights on `device`."""
    import diffusers

    if size == "tiny":
        from editforge.models.loading import load_pipeline

        # the plain pipeline: each benchmark configuration applies its own speed-ups
        return load_pipeline(TINY_PREFIX + family.name, device=device, dtype=dtype, attention=None,
                             reuse_embeddings=False)
    from editforge.models.text_encoder import allow_processor_without_video, fix_mrope_positions
    from editforge.models.tiny import build_processor, build_tokenizer

    allow_processor_without_video()
    tokenizer = build_tokenizer()
    pipe = getattr(diffusers, family.pipeline_class)(
        transformer=full_transformer(device, dtype, family),
        vae=full_vae(device, dtype),
        text_encoder=full_text_encoder(tokenizer, device, dtype),
        tokenizer=tokenizer,
        processor=build_processor(tokenizer),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(),
    )
    fix_mrope_positions(pipe.text_encoder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
