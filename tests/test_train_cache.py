"""Training feeds the transformer exactly what inference feeds it; the cache is computed only once."""

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import editforge
from editforge.inference.call import call_arguments, run_call
from editforge.inference.options import GenerationOptions
from editforge.inference.sizes import default_size
from editforge.models.info import family_of, model_info
from editforge.train.cache import build_cache, encode_sample
from editforge.train.objective import collate, pack, transformer_inputs
from tests.helpers import noise_image

AREAS = {"tiny-qwen-image-edit-2509": (64 * 64, 56 * 56), "tiny-qwen-image-edit-2511": (64 * 64, 56 * 56),
         "tiny-qwen-image-edit": (64 * 64, None), "tiny-qwen-image": (64 * 64, None)}


# Shapes that stay non-square at 64x64 pixels (sides are multiples of 32), so a swapped height/width shows.
CONTROL_SIZES = {"tiny-qwen-image-edit-2509": [(128, 64), (48, 96)], "tiny-qwen-image-edit-2511": [(128, 64), (48, 96)],
                 "tiny-qwen-image-edit": [(128, 64)], "tiny-qwen-image": []}
# Over 512 tokens: Qwen-Image's pipeline call keeps 512 of them (its max_sequence_length); the Edit pipelines all.
LONG_PROMPT = "make the sky red and the grass blue, " * 100


@pytest.mark.parametrize("model", list(CONTROL_SIZES))
def test_training_feeds_the_transformer_what_the_pipeline_feeds_it(model):
    """Every transformer call of a generation, with an oracle transformer that answers training's velocity target:
    training's inputs at the pipeline's sigma and noise (noisy target and controls packed in order, img_shapes,
    timestep, text embedding and mask) equal the pipeline's own, and the scheduler, stepping along the target,
    lands exactly on the cached latents of the data."""
    pipe = editforge.load_pipeline(model, device="cpu")
    family = family_of(pipe)
    max_pixels, condition_pixels = AREAS[model]
    controls = [noise_image(w, h, seed=i) for i, (w, h) in enumerate(CONTROL_SIZES[model])]
    target = noise_image(*(controls[-1].size if controls else (64, 128)), seed=9)  # an edit's output keeps this ratio
    batch = collate([encode_sample(pipe, target, controls, LONG_PROMPT, max_pixels, condition_pixels)], "cpu",
                    torch.float32)
    size = default_size(max_pixels, [c.size for c in controls or [target]])
    n_target = batch["target"].shape[2] * batch["target"].shape[3] // 4
    noise, calls = [], []

    def oracle(module, args, kwargs, output):
        if not noise:  # the first step is at sigma 1: the pipeline's latents are its noise
            assert kwargs["timestep"].tolist() == [1.0]
            hidden = kwargs["hidden_states"][:, :n_target]
            noise.append(pipe._unpack_latents(hidden, size[1], size[0], pipe.vae_scale_factor)[:, :, 0])
        inputs, velocity = transformer_inputs(batch, kwargs["timestep"], noise[0])
        calls.append((kwargs, inputs))
        answer = torch.zeros_like(output[0])
        answer[:, :n_target] = velocity
        return (answer,)

    def last_latents(pipe, step, timestep, tensors):
        latents.append(tensors["latents"][0])
        return {}

    hook = pipe.transformer.register_forward_hook(oracle, with_kwargs=True)
    latents = []
    try:
        options = GenerationOptions(steps=3, cfg=1.0, max_pixels=max_pixels,
                                    condition_pixels=condition_pixels).resolved(model_info(pipe))
        arguments = call_arguments(family, controls, LONG_PROMPT, options, size=size, seed=0)
        image = run_call(pipe, {**arguments, "callback_on_step_end": last_latents}, options)
    finally:
        hook.remove()

    assert len(calls) == 3
    for kwargs, inputs in calls:
        given = {k for k, v in kwargs.items() if v is not None and not (k == "attention_kwargs" and v == {})
                 and k != "return_dict"}
        assert given == {k for k, v in inputs.items() if v is not None}  # the mask: None on both sides
        assert torch.equal(inputs["timestep"], kwargs["timestep"]) and inputs["img_shapes"] == kwargs["img_shapes"]
        # Text: the template, image tokens, dropped prefix and token limit of the call, bit for bit.
        assert torch.equal(inputs["encoder_hidden_states"], kwargs["encoder_hidden_states"])
        # Controls: the pipeline's own VAE encoding and normalisation, packed after the noisy target, bit for bit.
        assert torch.equal(inputs["hidden_states"][:, n_target:], kwargs["hidden_states"][:, n_target:])
        # The noisy target: the scheduler's Euler steps vs (1 - s) x0 + s n, equal up to float rounding.
        torch.testing.assert_close(inputs["hidden_states"][:, :n_target], kwargs["hidden_states"][:, :n_target])
    if family.prompt_max_tokens:
        assert calls[0][1]["encoder_hidden_states"].shape[1] == family.prompt_max_tokens
    # The scheduler, following the velocity target, reaches the cached target latents ...
    torch.testing.assert_close(latents[-1], pack(batch["target"])[0])
    # ... which the pipeline decodes into the VAE's own reconstruction of the target: the normalisation of the
    # cached target is the inverse of the pipeline's denormalisation.
    pixels = pipe.image_processor.preprocess(target, size[1], size[0]).unsqueeze(2)
    with torch.no_grad():
        decoded = pipe.vae.decode(pipe.vae.encode(pixels).latent_dist.mode()).sample[:, :, 0]
    reconstruction = np.asarray(pipe.image_processor.postprocess(decoded)[0], dtype=int)
    assert np.abs(np.asarray(image, dtype=int) - reconstruction).max() <= 1


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


def test_the_prompt_token_limit_is_part_of_the_cache_key(monkeypatch):
    """A cache written under another token limit (e.g. the 1024 tokens of older EditForge) is never reused."""
    import dataclasses

    from editforge.models.info import ATTRIBUTE
    from editforge.train.cache import settings_fingerprint

    pipe = editforge.load_pipeline("tiny-qwen-image", device="cpu")
    before = settings_fingerprint(pipe, 64 * 64, None)
    info = model_info(pipe)
    monkeypatch.setattr(pipe, ATTRIBUTE, dataclasses.replace(
        info, family=dataclasses.replace(info.family, prompt_max_tokens=1024)))
    assert settings_fingerprint(pipe, 64 * 64, None) != before


@pytest.mark.parametrize("model", ["tiny-qwen-image-edit-2511", "tiny-qwen-image-edit-2509"])
def test_2511_condition_tokens_get_timestep_0_in_training_as_in_generation(model):
    """Edit-2511's transformer (`zero_cond_t`) modulates the control tokens with timestep 0 and the target tokens
    with the step's: what the blocks get (the timesteps embedded, which tokens count as conditions) is the same
    when training builds the input as when the pipeline generates. Edit-2509 has no such split."""
    from editforge.train.objective import flow_matching_loss

    pipe = editforge.load_pipeline(model, device="cpu")
    transformer = pipe.transformer
    # 16 tokens, then 12: the token counts tell the target (12, the last control's ratio) from the controls
    controls = [noise_image(64, 64, seed=1), noise_image(48, 96, seed=2)]
    batch = collate([encode_sample(pipe, noise_image(48, 96, seed=3), controls, "join them", 64 * 64, 56 * 56)],
                    "cpu", torch.float32)
    n_target = batch["target"].shape[2] * batch["target"].shape[3] // 4
    seen = []  # (timesteps embedded, modulate_index) per transformer call

    def embedded(module, args):
        seen.append([args[0].clone()])

    def block(module, args, kwargs):
        index = kwargs["modulate_index"]
        seen[-1].append(None if index is None else index.clone())

    hooks = [transformer.time_text_embed.register_forward_pre_hook(embedded),
             transformer.transformer_blocks[0].register_forward_pre_hook(block, with_kwargs=True)]
    try:
        options = GenerationOptions(steps=2, cfg=1.0).resolved(model_info(pipe))
        size = default_size(options.max_pixels, [c.size for c in controls])
        run_call(pipe, call_arguments(family_of(pipe), controls, "join them", options, size=size, seed=0), options)
        generation = seen[0]  # the first step, at sigma 1
        seen.clear()
        with torch.no_grad():
            flow_matching_loss(transformer, batch, torch.tensor([1.0]), torch.randn_like(batch["target"]))
        training = seen[0]
    finally:
        for hook in hooks:
            hook.remove()

    assert torch.equal(training[0], generation[0])
    if family_of(pipe).transformer_config.get("zero_cond_t"):
        assert training[0].tolist() == [1.0, 0.0]  # the step's timestep for the target, 0 for the conditions
        index = training[1][0].tolist()
        assert index == [0] * n_target + [1] * (len(index) - n_target) and len(index) > n_target
        assert torch.equal(training[1], generation[1])
    else:
        assert training[0].tolist() == [1.0] and training[1] is None and generation[1] is None


def test_the_text_encoder_caches_and_is_gone_before_the_transformer_loads(tmp_path, monkeypatch):
    """Caching is its own phase: while it runs there is no transformer; when the transformer loads, the text encoder
    object no longer exists (no reference kept anywhere: its weakref is dead), so the two never share memory."""
    import weakref

    import editforge.train.loop as loop
    from editforge.train import train
    from editforge.train.config import validate
    from tests.helpers import write_samples

    seen = {}

    def build_cache(pipe, *args, **kwargs):
        seen["text_encoder"] = weakref.ref(pipe.text_encoder)
        seen["transformer while caching"] = pipe.transformer
        return real_build_cache(pipe, *args, **kwargs)

    def load_transformer(plan, **kwargs):
        seen["text encoder when the transformer loads"] = seen["text_encoder"]()
        return real_load_transformer(plan, **kwargs)

    real_build_cache, real_load_transformer = loop.build_cache, loop.load_transformer
    monkeypatch.setattr(loop, "build_cache", build_cache)
    monkeypatch.setattr(loop, "load_transformer", load_transformer)
    samples = write_samples(tmp_path / "data")
    raw = {"model": "tiny-qwen-image-edit-2509", "output_dir": str(tmp_path / "out"),
           "data": {"samples": samples, "max_pixels": 64 * 64, "condition_pixels": 56 * 56},
           "validation": {"samples": [samples[0]], "every": 1, "steps": 2},
           "lora": {"rank": 4, "alpha": 4}, "train": {"steps": 1, "mixed_precision": "no"}}
    result = train(validate(raw))
    assert seen["transformer while caching"] is None
    assert seen["text encoder when the transformer loads"] is None
    assert len(result.losses) == 1 and (tmp_path / "out" / "validation" / "step-000001" / "0.png").is_file()
