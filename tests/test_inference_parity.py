"""editforge.generate equals a bare diffusers pipeline built from the same components."""

import copy

import diffusers
import numpy as np
import pytest

import editforge
from editforge.inference.metadata import read_params, save_png_atomic
from tests.helpers import noise_image


def _bare(pipe, cls_name):
    """A plain diffusers pipeline sharing the components (and so the same weights and scheduler)."""
    components = dict(pipe.components)
    components["scheduler"] = copy.deepcopy(pipe.scheduler)
    return getattr(diffusers, cls_name)(**components)


@pytest.mark.slow
def test_edit_plus_matches_diffusers_at_default_sizes():
    pipe = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu")
    images = [noise_image(96, 64, seed=1), noise_image(64, 80, seed=2)]
    ours = editforge.edit(pipe, images, "make the sky red", seed=7, steps=2,
                          max_pixels=1024 * 1024, condition_pixels=384 * 384)
    import torch

    bare = _bare(pipe, "QwenImageEditPlusPipeline")
    bare.set_progress_bar_config(disable=True)
    theirs = bare(image=images, prompt="make the sky red", num_inference_steps=2, true_cfg_scale=4.0,
                  negative_prompt=" ", generator=torch.Generator("cpu").manual_seed(7)).images[0]
    assert ours.size == theirs.size == (928, 1152)  # the last image's ratio at 1 MP, as diffusers does it
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))


@pytest.mark.slow
def test_edit_v1_matches_diffusers_at_default_size():
    import torch

    pipe = editforge.load_pipeline("tiny-qwen-image-edit", device="cpu", lightning=8)
    image = noise_image(64, 64, seed=3)
    ours = editforge.edit(pipe, image, "add a cat", seed=3, max_pixels=1024 * 1024, steps=2)
    bare = _bare(pipe, "QwenImageEditPipeline")
    bare.set_progress_bar_config(disable=True)
    theirs = bare(image=image, prompt="add a cat", num_inference_steps=2, true_cfg_scale=1.0,
                  generator=torch.Generator("cpu").manual_seed(3)).images[0]
    assert np.array_equal(np.asarray(ours), np.asarray(theirs))


def test_size_knobs_change_the_work_done(tiny_edit_plus):
    image, params = editforge.generate(tiny_edit_plus, [noise_image(128, 64)], "x", seed=0, steps=2,
                                       max_pixels=128 * 64)
    assert image.size == (128, 64) and params["max_pixels"] == 128 * 64
    # tiny default: 64x64-ish output, whatever the input size
    assert editforge.edit(tiny_edit_plus, noise_image(300, 300), "x", seed=0, steps=2).size == (64, 64)


def test_same_seed_same_pixels_other_seed_other_pixels(tiny_edit_plus):
    img = noise_image(64, 64)
    a = np.asarray(editforge.edit(tiny_edit_plus, img, "x", seed=1, steps=2))
    b = np.asarray(editforge.edit(tiny_edit_plus, img, "x", seed=1, steps=2))
    c = np.asarray(editforge.edit(tiny_edit_plus, img, "x", seed=2, steps=2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_png_carries_generation_parameters(tiny_edit_plus, tmp_path):
    image, params = editforge.generate(tiny_edit_plus, [noise_image()], "make it blue", seed=5, steps=2)
    path = save_png_atomic(image, tmp_path / "out.png", params)
    stored = read_params(path)
    assert stored["prompt"] == "make it blue" and stored["seed"] == 5 and stored["steps"] == 2
    assert stored["model"] == "tiny-qwen-image-edit-2509" and stored["cfg"] == 4.0
    assert stored["width"] == 64 and stored["input_sizes"] == [[64, 64]]
    assert not list(tmp_path.glob(".*tmp*")), "no temporary file left behind"


def test_wrong_number_of_images_is_a_clear_error(tiny_edit_plus):
    from editforge.errors import EditForgeError

    with pytest.raises(EditForgeError, match="1 to 3 input images"):
        editforge.edit(tiny_edit_plus, [noise_image()] * 4, "x", seed=0)
    with pytest.raises(EditForgeError, match="`condition_pixels` applies only to qwen-image-edit-2509, qwen-image-edit-2511"):
        editforge.edit(editforge.load_pipeline("tiny-qwen-image-edit", device="cpu"), noise_image(), "x",
                       seed=0, condition_pixels=56 * 56)


def test_negative_prompt_with_cfg_1_warns(tiny_edit_plus):
    from editforge.inference.generate import NegativePromptIgnored

    with pytest.warns(NegativePromptIgnored, match="does nothing"):
        editforge.edit(tiny_edit_plus, noise_image(), "x", seed=0, steps=2, cfg=1.0, negative_prompt="ugly")


def test_text_to_image_aspects():
    pipe = editforge.load_pipeline("tiny-qwen-image", device="cpu")
    square, params = editforge.text_to_image(pipe, "a cat", seed=0, steps=2)
    wide, _ = editforge.text_to_image(pipe, "a cat", seed=0, steps=2, aspect="16:9", magic="en")
    assert square.size == (64, 64) and wide.width > wide.height
    full, _ = editforge.text_to_image(pipe, "a cat", seed=0, steps=2, aspect="16:9", max_pixels=1328 * 1328)
    assert full.size == (1664, 928)


def test_one_step_needs_a_distilled_scheduler(tiny_edit_plus):
    """Qwen-Image's own scheduler (shift_terminal) turns a 1-step run into NaN: a black picture. Refuse it."""
    from editforge.errors import EditForgeError

    with pytest.raises(EditForgeError, match="at least 2 steps"):
        editforge.edit(tiny_edit_plus, noise_image(), "x", seed=0, steps=1)
    lightning = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", lightning=4)
    assert np.asarray(editforge.edit(lightning, noise_image(), "x", seed=0, steps=1)).std() > 1
