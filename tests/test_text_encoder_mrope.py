"""transformers >= 5.3 needs mm_token_type_ids for 3-D image positions; EditForge fills it at the encoder."""

import torch

from editforge.models.text_encoder import fix_mrope_positions, mm_token_type_ids
from editforge.models.tiny import build_tiny_pipeline
from editforge.models.registry import FAMILIES
from tests.helpers import noise_image


def _inputs(pipe):
    text = "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>make it red<|im_end|>"
    out = pipe.processor(text=[text], images=[noise_image(56, 84)], padding=True, return_tensors="pt")
    return {k: out[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw")}, out


def _positions(encoder, inputs):
    """The position ids the language model receives."""
    seen = {}

    def grab(module, args, kwargs):
        seen["position_ids"] = kwargs.get("position_ids")

    handle = encoder.model.language_model.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        hidden = encoder(**inputs, output_hidden_states=True).hidden_states[-1]
    handle.remove()
    return seen["position_ids"], hidden


def test_image_tokens_get_3d_positions_only_with_the_fix():
    pipe = build_tiny_pipeline(FAMILIES["qwen-image-edit-2509"])
    encoder = pipe.text_encoder
    inputs, processed = _inputs(pipe)
    image_token = encoder.config.image_token_id
    is_image = inputs["input_ids"][0] == image_token
    assert is_image.sum() >= 4

    plain_pos, plain_hidden = _positions(encoder, inputs)
    fix_mrope_positions(encoder)
    fixed_pos, fixed_hidden = _positions(encoder, inputs)

    def spatial_spread(pos):
        # (3, batch, seq) mRoPE ids: height and width axes vary across image tokens in a 2-D grid
        pos = pos[:, 0, is_image] if pos.dim() == 3 else pos[0, is_image].expand(3, -1)
        return [len(set(axis.tolist())) for axis in pos]

    fixed_t, fixed_h, fixed_w = spatial_spread(fixed_pos)
    assert fixed_t == 1 and fixed_h > 1 and fixed_w > 1, "image tokens should sit on a 2-D grid"
    assert not torch.allclose(plain_hidden, fixed_hidden), "the fix must change what the encoder computes"

    # With the fix, leaving mm_token_type_ids out equals passing what the processor itself returns.
    with torch.no_grad():
        explicit = encoder(**inputs, mm_token_type_ids=processed["mm_token_type_ids"],
                           output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(fixed_hidden, explicit, rtol=0, atol=0)


def test_token_types_match_the_processor():
    pipe = build_tiny_pipeline(FAMILIES["qwen-image-edit-2509"])
    inputs, processed = _inputs(pipe)
    cfg = pipe.text_encoder.config
    ours = mm_token_type_ids(inputs["input_ids"], cfg.image_token_id, cfg.video_token_id)
    assert torch.equal(ours, processed["mm_token_type_ids"].to(ours.dtype))
