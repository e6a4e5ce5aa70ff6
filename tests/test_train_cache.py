"""The training cache holds exactly what inference feeds the transformer, and is computed only once."""

import hashlib
from types import SimpleNamespace

import pytest
import torch

import editforge
from editforge.train.cache import build_cache, encode_sample
from editforge.train.objective import pack
from tests.conftest import noise_image

AREAS = {"tiny-qwen-image-edit-2509": (64 * 64, 56 * 56), "tiny-qwen-image-edit": (64 * 64, None),
         "tiny-qwen-image": (64 * 64, None)}


def transformer_inputs(pipe, images, prompt, max_pixels, condition_pixels):
    """What `editforge.generate` passes to the transformer on its first denoising step."""
    seen = []
    hook = pipe.transformer.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs), with_kwargs=True)
    try:
        editforge.generate(pipe, images, prompt, seed=0, steps=2, cfg=1.0, max_pixels=max_pixels,
                           condition_pixels=condition_pixels)
    finally:
        hook.remove()
    return seen[0]


@pytest.mark.parametrize("model,control_sizes", [
    ("tiny-qwen-image-edit-2509", [(96, 64), (64, 80)]),
    ("tiny-qwen-image-edit", [(80, 64)]),
    ("tiny-qwen-image", []),
])
def test_cached_tensors_equal_what_inference_feeds_the_transformer(model, control_sizes):
    pipe = editforge.load_pipeline(model, device="cpu")
    max_pixels, condition_pixels = AREAS[model]
    controls = [noise_image(w, h, seed=i) for i, (w, h) in enumerate(control_sizes)]
    prompt = "make the sky red"
    cached = encode_sample(pipe, noise_image(64, 48, seed=9), controls, prompt, max_pixels, condition_pixels)
    seen = transformer_inputs(pipe, controls, prompt, max_pixels, condition_pixels)

    # Text: same template, same image tokens, same dropped prefix -> the same embedding, bit for bit.
    assert torch.equal(cached["prompt_embeds"], seen["encoder_hidden_states"][0])
    # Controls: the pipeline appends them, packed, after the noisy target tokens.
    n_target = seen["img_shapes"][0][0][1] * seen["img_shapes"][0][0][2]
    packed = [pack(cached[f"control_{i}"][None]) for i in range(len(controls))]
    assert len(packed) == len(seen["img_shapes"][0]) - 1
    if packed:
        assert torch.equal(torch.cat(packed, dim=1)[0], seen["hidden_states"][0, n_target:])


def samples_on_disk(make_image, count=3):
    samples = [SimpleNamespace(target=make_image(f"t{i}.png", 96, 48, seed=i),
                               controls=[make_image(f"c{i}.png", 48, 96, seed=10 + i)][: i % 2 + 1] if i < 2 else [],
                               instruction=f"edit {i}") for i in range(count)]
    bad = make_image("bad.png")
    bad.write_bytes(b"\x89PNG truncated")
    samples.append(SimpleNamespace(target=bad, controls=[], instruction="broken"))
    samples.append(SimpleNamespace(target=bad.with_name("missing.png"), controls=[], instruction="missing"))
    return samples


def test_second_build_computes_nothing_and_settings_change_the_key(tiny_edit_plus, make_image, tmp_path,
                                                                   monkeypatch):
    samples = samples_on_disk(make_image)
    first = build_cache(tiny_edit_plus, samples, tmp_path / "cache", vae_pixels=64 * 64, condition_pixels=56 * 56)
    assert (first.computed, first.reused, len(first.samples)) == (3, 0, 3)
    assert len(first.skipped) == 2  # corrupt and missing: counted, not fatal
    assert any("bad.png" in s for s in first.skipped) and any("missing.png" in s for s in first.skipped)
    # Buckets: target latent shape plus each control's (2:1 and 1:2 at 64*64 -> 96x32 and 32x96 pixels, /8);
    # the text-only sample has no control entry.
    assert first.samples[0].bucket == ((4, 4, 12), (4, 12, 4)) and first.samples[2].bucket == ((4, 4, 12),)

    def fail(*args, **kwargs):
        raise AssertionError("the encoders ran on a cached sample")

    monkeypatch.setattr(tiny_edit_plus.vae, "encode", fail)
    monkeypatch.setattr(tiny_edit_plus.text_encoder, "forward", fail)
    hashed = []
    real_sha256 = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda data=b"": (hashed.append(len(data)), real_sha256(data))[1])
    again = build_cache(tiny_edit_plus, samples, tmp_path / "cache", vae_pixels=64 * 64, condition_pixels=56 * 56)
    assert (again.computed, again.reused, len(again.skipped)) == (0, 3, 2)
    assert [s.path for s in again.samples] == [s.path for s in first.samples]
    image_sizes = {p.stat().st_size for s in samples for p in [s.target, *s.controls] if p.exists()}
    assert not image_sizes & set(hashed), "unchanged images are not read again: their digests are remembered"
    monkeypatch.undo()

    # Another area or an edited image is another key.
    other = build_cache(tiny_edit_plus, samples[:1], tmp_path / "cache", vae_pixels=32 * 32, condition_pixels=56 * 56)
    assert other.computed == 1 and other.samples[0].path not in {s.path for s in first.samples}
    noise_image(96, 48, seed=99).save(samples[0].target)
    edited = build_cache(tiny_edit_plus, samples[:1], tmp_path / "cache", vae_pixels=64 * 64, condition_pixels=56 * 56)
    assert edited.computed == 1
