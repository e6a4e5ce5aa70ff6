"""Tiny offline twins of the Qwen-Image families: same classes, random weights from a fixed seed.

Hub weights cannot be downloaded on every machine (CI, air-gapped clusters), so the demo and the tests run
on these. Each is built once in a few seconds, saved as an ordinary diffusers pipeline folder under the
EditForge cache, and from then on loaded exactly like a real model. A tiny Lightning LoRA (random, in the
bare `lora_down/lora_up/alpha` layout the real Lightning files use) is saved beside it, so `--lightning`
exercises the real code path too.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from filelock import FileLock

from editforge.models.registry import (
    EDITFORGE_META,
    TINY_CONDITION_PIXELS,
    TINY_MAX_PIXELS,
    QWEN_IMAGE_SCHEDULER,
    TINY_MODELS,
    Family,
    tiny_folder,
)
from editforge.models.text_encoder import allow_processor_without_video
from editforge.quiet import no_progress_bars

SEED = 0
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
TEXT_HIDDEN = 16
TINY_LIGHTNING_DIR = "lightning"
LATENTS_MEAN = [0.4, -0.7, 0.15, -0.25]
LATENTS_STD = [1.8, 0.55, 2.4, 0.9]
# Like the real Lightning files, alpha is not the rank: a loader that ignores alpha scales them wrongly.
LIGHTNING_RANK, LIGHTNING_ALPHA = 4, 8.0


def tiny_model_dir(name: str) -> Path:
    """The saved folder of tiny model `name`, built on first use (safe with concurrent processes)."""
    family = TINY_MODELS[name]
    target = tiny_folder(name)
    root = target.parent
    if (target / EDITFORGE_META).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f".{name}.lock")):
        if not (target / EDITFORGE_META).is_file():
            print(f"building the offline tiny model {name} (once)", file=sys.stderr, flush=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
            try:
                # fork_rng: building seeds torch's global generator; a caller's seeded run (training's LoRA
                # init, noise) must not depend on whether this was the model's first use
                with no_progress_bars(), torch.random.fork_rng(devices=[]):
                    build_tiny_pipeline(family).save_pretrained(staging)
                save_tiny_lightning(family, staging / TINY_LIGHTNING_DIR)
                meta = {"family": family.name, "max_pixels": TINY_MAX_PIXELS, "tiny": True}
                if family.condition_pixels:
                    meta["condition_pixels"] = TINY_CONDITION_PIXELS
                (staging / EDITFORGE_META).write_text(json.dumps(meta, indent=2))
                shutil.rmtree(target, ignore_errors=True)
                os.replace(staging, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return target


def build_tiny_pipeline(family: Family):
    import diffusers

    allow_processor_without_video()
    tokenizer = build_tokenizer()
    components = {
        "transformer": build_transformer(family),
        "vae": build_vae(),
        "scheduler": diffusers.FlowMatchEulerDiscreteScheduler.from_config(QWEN_IMAGE_SCHEDULER),
        "text_encoder": build_text_encoder(tokenizer),
        "tokenizer": tokenizer,
    }
    if family.is_edit:
        components["processor"] = build_processor(tokenizer)
    return getattr(diffusers, family.pipeline_class)(**components)


def build_transformer(family: Family):
    """The family's transformer (its distinguishing config, e.g. Edit-2511's `zero_cond_t`) at tiny size."""
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(SEED)
    return QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=16,
        out_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=3,
        joint_attention_dim=TEXT_HIDDEN,
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),
        **family.transformer_config,
    )


def build_vae():
    from diffusers import AutoencoderKLQwenImage

    torch.manual_seed(SEED)
    z_dim = 4
    return AutoencoderKLQwenImage(
        base_dim=8,
        z_dim=z_dim,
        dim_mult=[1, 2, 4, 4],  # x8 spatial downsampling, like the real VAE
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        # Not 0 / 1: with the identity, a latent normalisation applied the wrong way round (or not at all)
        # would pass every test; the real VAE's values are of this size.
        latents_mean=LATENTS_MEAN,
        latents_std=LATENTS_STD,
    )


def build_tokenizer():
    """A small byte-level BPE with Qwen's special tokens, trained locally in milliseconds."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [
        "Describe the key features of the input image (color, shape, size, texture, objects, background), "
        "then explain how the user's text instruction should alter or modify the image. Generate a new image "
        "that meets the user's requirements while maintaining consistency with the original input.",
        "Picture 1: Picture 2: Picture 3: system user assistant make the sky red add a cat remove the text",
    ] * 4
    bpe.train_from_iterator(corpus, trainer)
    with tempfile.TemporaryDirectory() as tmp:
        bpe.save(f"{tmp}/tokenizer.json")
        config = {
            "tokenizer_class": "Qwen2Tokenizer",
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "model_max_length": 32768,
        }
        Path(tmp, "tokenizer_config.json").write_text(json.dumps(config))
        return Qwen2Tokenizer.from_pretrained(tmp)


def build_text_encoder(tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": TEXT_HIDDEN,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "vocab_size": len(tokenizer),
            "bos_token_id": ids("<|endoftext|>"),
            "eos_token_id": ids("<|im_end|>"),
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
        },
        vision_config={
            "depth": 2,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": TEXT_HIDDEN,
            "fullatt_block_indexes": [1],
        },
        vocab_size=len(tokenizer),
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )
    torch.manual_seed(SEED)
    return Qwen2_5_VLForConditionalGeneration(config)


def build_processor(tokenizer):
    from transformers import Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    # The real checkpoints' limits; the pipeline resizes condition images before the processor sees them.
    image_processor = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=28 * 28 * 1280)
    return Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer)


def save_tiny_lightning(family: Family, folder: Path) -> None:
    """Random Lightning-shaped LoRAs under the real file names, so `--lightning` works offline."""
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(SEED + 1)
    rank, width = LIGHTNING_RANK, 48  # 3 heads x 16
    tensors = {}
    for block in range(2):
        for proj in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"):
            prefix = f"transformer_blocks.{block}.attn.{proj}"
            tensors[f"{prefix}.lora_down.weight"] = torch.randn(rank, width, generator=generator) * 0.1
            tensors[f"{prefix}.lora_up.weight"] = torch.randn(width, rank, generator=generator) * 0.1
            tensors[f"{prefix}.alpha"] = torch.tensor(LIGHTNING_ALPHA)
    for filename in family.lightning_files.values():
        path = folder / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path))
