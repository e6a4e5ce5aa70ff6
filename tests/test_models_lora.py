"""Lightning and user LoRAs: every key layout users meet loads with the right scale; files that load nothing or
belong to another model are errors, files that load partly say how much."""

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import editforge
from editforge.errors import EditForgeError
from editforge.models.info import model_info
from editforge.models import lightning
from editforge.models.lora import LoraPartlyMatched, parse_lora_arg
from editforge.models.registry import FAMILIES
from tests.helpers import ALPHA, LOADABLE, RANK, WIDTH, noise_image, run_cli, write_lora

MODEL = "tiny-qwen-image-edit-2509"
def _pixels(pipe):
    return np.asarray(editforge.edit(pipe, noise_image(), "make it red", seed=0, steps=2), dtype=np.int16)


@pytest.fixture(scope="module")
def base_pixels():
    return _pixels(editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu"))


@pytest.fixture(scope="module")
def base_weights():
    return {k: v.clone() for k, v in editforge.load_pipeline(MODEL, device="cpu").transformer.state_dict().items()}


@pytest.mark.parametrize("scale", [0.5, 1.5])
@pytest.mark.parametrize("layout", LOADABLE)
def test_every_layout_adds_scale_times_alpha_over_rank_times_up_down(tmp_path, layout, scale, base_weights):
    path = tmp_path / f"{layout}.safetensors"
    pairs = write_lora(path, layout)
    pipe = editforge.load_pipeline(MODEL, device="cpu", loras=[f"{path}:{scale}"])
    assert model_info(pipe).loras == (f"{layout}.safetensors:{scale:g}",)
    weights = pipe.transformer.state_dict()
    assert weights.keys() == base_weights.keys()  # fused: no LoRA layers left behind
    for name, weight in weights.items():
        layer = name.removesuffix(".weight")
        if layer in pairs:
            down, up = pairs[layer]
            torch.testing.assert_close(weight, base_weights[name] + scale * (ALPHA / RANK) * up @ down)
        else:
            assert torch.equal(weight, base_weights[name]), name


def test_a_lora_without_alpha_or_prefix_matches_nothing_and_is_an_error(tmp_path):
    path = tmp_path / "bare.safetensors"
    write_lora(path, "bare-A-B-no-alpha")
    with pytest.raises(EditForgeError, match="none of its keys match"):
        editforge.load_pipeline(MODEL, device="cpu", loras=[str(path)])


def test_a_lora_of_another_model_is_an_error(tmp_path):
    """Flux's double blocks share Qwen-Image's attention names (some layers would load), but its single blocks
    and `ff` MLPs exist nowhere in this transformer."""
    path = tmp_path / "flux.safetensors"
    write_lora(path, "diffusers", blocks=(0,), layers=("single_transformer_blocks.0.attn.to_q",
                                                      "transformer_blocks.0.ff.net.0.proj"))
    with pytest.raises(EditForgeError, match=r"flux.safetensors is for another model: 2 of its layers.*"
                                             r"e\.g\. single_transformer_blocks\.0\.attn\.to_q"):
        editforge.load_pipeline(MODEL, device="cpu", loras=[str(path)])
    other = tmp_path / "unet.safetensors"
    save_file({"unet.down_blocks.0.to_q.lora_A.weight": torch.ones(RANK, WIDTH),
               "unet.down_blocks.0.to_q.lora_B.weight": torch.ones(WIDTH, RANK)}, str(other))
    with pytest.raises(EditForgeError, match="none of its keys match"):
        editforge.load_pipeline(MODEL, device="cpu", loras=[str(other)])


def test_a_lora_that_matches_part_of_the_transformer_says_how_much(tmp_path, base_weights):
    path = tmp_path / "deeper.safetensors"
    pairs = write_lora(path, "lightning", blocks=(0, 1, 5))  # a LoRA for a deeper model: there is no block 5
    with pytest.warns(LoraPartlyMatched, match=r"lora deeper.safetensors: 6/9 layers matched; 3 unused, "
                                               r"e\.g\. transformer\.transformer_blocks\.5\.attn\.to_k"):
        pipe = editforge.load_pipeline(MODEL, device="cpu", loras=[str(path)])
    down, up = pairs["transformer_blocks.1.attn.to_v"]
    torch.testing.assert_close(pipe.transformer.transformer_blocks[1].attn.to_v.weight,
                               base_weights["transformer_blocks.1.attn.to_v.weight"] + (ALPHA / RANK) * up @ down)
    with pytest.raises(EditForgeError, match=r"6/9 layers matched.*`strict_lora` refuses"):
        editforge.load_pipeline(MODEL, device="cpu", loras=[str(path)], strict_lora=True)


def test_cli_reports_a_partial_lora_and_strict_lora_refuses_it(tmp_path, make_image):
    lora = tmp_path / "deeper.safetensors"
    write_lora(lora, "lightning", blocks=(0, 5))
    args = ["edit", "--model", MODEL, "--image", make_image(), "--prompt", "x", "--steps", "2", "--lora", lora]
    loose = run_cli(*args, "--out", tmp_path / "a.png")
    assert loose.returncode == 0, loose.stderr
    assert "warning: lora deeper.safetensors: 3/6 layers matched; 3 unused" in loose.stderr
    strict = run_cli(*args, "--out", tmp_path / "b.png", "--strict-lora")
    assert strict.returncode == 2 and "3/6 layers matched" in strict.stderr and "Traceback" not in strict.stderr
    assert not (tmp_path / "b.png").exists()


def test_missing_or_corrupt_lora_is_an_error_not_a_hub_lookup(tmp_path):
    with pytest.raises(EditForgeError, match="not found.*never looks"):
        editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", loras=["owner/some-repo"])
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(EditForgeError, match="not a readable"):
        editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", loras=[str(junk)])


def test_lora_scale_scales_the_effect(tmp_path, base_pixels):
    path = tmp_path / "l.safetensors"
    write_lora(path, "lightning")
    zero = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", loras=[f"{path}:0"])
    assert np.array_equal(_pixels(zero), base_pixels)


@pytest.mark.parametrize(
    "text, path, scale",
    [("a.safetensors", "a.safetensors", 1.0), ("a.safetensors:0.5", "a.safetensors", 0.5),
     ("C:\\loras\\a.safetensors", "C:\\loras\\a.safetensors", 1.0), ("C:\\a.safetensors:2", "C:\\a.safetensors", 2.0)],
)
def test_lora_argument_parsing(text, path, scale):
    spec = parse_lora_arg(text)
    assert str(spec.path) == path and spec.scale == scale


def test_lightning_uses_the_distillation_scheduler_steps_and_cfg():
    pipe = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", lightning=8)
    cfg = pipe.scheduler.config
    assert math.isclose(cfg.base_shift, math.log(3)) and math.isclose(cfg.max_shift, math.log(3))
    assert cfg.shift_terminal is None and cfg.use_dynamic_shifting and cfg.time_shift_type == "exponential"
    assert (cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.shift) == (256, 8192, 1.0)
    info = model_info(pipe)
    assert (info.default_steps, info.default_cfg) == (8, 1.0)
    assert info.lightning_file == "Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors"
    _, params = editforge.generate(pipe, [noise_image()], "x", seed=0)
    assert params["steps"] == 8 and params["cfg"] == 1.0


def test_lightning_file_for_another_family_is_refused(tmp_path):
    wrong = tmp_path / "Qwen-Image-Edit-Lightning-8steps-V1.0-bf16.safetensors"  # v1 Edit, not 2509
    write_lora(wrong, "lightning")
    with pytest.raises(EditForgeError, match="for qwen-image-edit, but the model is qwen-image-edit-2509"):
        editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", lightning=8, lightning_path=wrong)
    pipe = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", lightning=8, lightning_path=wrong,
                                   force=True)
    assert model_info(pipe).lightning_file == wrong.name


def test_lightning_files_are_named_per_family():
    for family in FAMILIES.values():
        for steps, filename in family.lightning_files.items():
            assert lightning.family_of_file(filename) is family
            lightning.check_file(Path(filename), family, steps)  # a family's own files pass its checks


@pytest.mark.parametrize("name, family, steps, refusal", [
    # lightx2v's files (DESIGN.md), in any case
    ("Qwen-Image-Edit-Lightning-8steps-V1.0.safetensors", "qwen-image-edit", 8, None),
    ("Qwen-Image-Edit-Lightning-4steps-V1.0-bf16.safetensors", "qwen-image-edit", 4, None),
    ("Qwen-Image-Edit-2509-Lightning-8steps-V1.0-fp32.safetensors", "qwen-image-edit-2509", 8, None),
    ("Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors", "qwen-image-edit-2509", 4, None),
    ("Qwen-Image-Lightning-8steps-V1.0.safetensors", "qwen-image", 8, None),
    ("Qwen-Image-Lightning-4steps-V2.0.safetensors", "qwen-image", 4, None),
    ("qwen-image-lightning-8steps-v2.0.safetensors", "qwen-image", 8, None),
    # a renamed copy: the name says nothing, the user says what it is
    ("my-distilled-lora.safetensors", "qwen-image-edit-2509", 8, None),
    # another family's
    ("Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors", "qwen-image-edit", 8,
     "is the Lightning LoRA for qwen-image-edit-2509, but the model is qwen-image-edit"),
    ("Qwen-Image-Edit-Lightning-8steps-V1.0-bf16.safetensors", "qwen-image-edit-2509", 8,
     "is the Lightning LoRA for qwen-image-edit, but the model is qwen-image-edit-2509"),
    ("Qwen-Image-Lightning-8steps-V1.0.safetensors", "qwen-image-edit", 8,
     "is the Lightning LoRA for qwen-image, but the model is qwen-image-edit"),
    # 2511 and 2512 have their own (lightx2v/Qwen-Image-Edit-2511-Lightning, lightx2v/Qwen-Image-2512-Lightning)
    ("Qwen-Image-Edit-2511-Lightning-4steps-V1.0-fp32.safetensors", "qwen-image-edit-2511", 4, None),
    ("Qwen-Image-2512-Lightning-8steps-V1.0-bf16.safetensors", "qwen-image-2512", 8, None),
    ("Qwen-Image-Edit-2511-Lightning-8steps-V1.0-bf16.safetensors", "qwen-image-edit-2509", 8,
     "is the Lightning LoRA for qwen-image-edit-2511, but the model is qwen-image-edit-2509"),
    ("Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors", "qwen-image-edit-2511", 8,
     "is the Lightning LoRA for qwen-image-edit-2509, but the model is qwen-image-edit-2511"),
    ("Qwen-Image-2512-Lightning-8steps-V1.0-bf16.safetensors", "qwen-image", 8,
     "is the Lightning LoRA for qwen-image-2512, but the model is qwen-image"),
    # models EditForge does not know (yet): not Edit v1 because the name says "Edit", nor Qwen-Image otherwise
    ("Qwen-Image-Edit-2601-Lightning-8steps-V1.0-bf16.safetensors", "qwen-image-edit", 8,
     "is the Lightning LoRA of Qwen-Image-Edit-2601, a model EditForge does not support"),
    ("Qwen-Image-2605-Lightning-8steps-V1.0-bf16.safetensors", "qwen-image", 8,
     "is the Lightning LoRA of Qwen-Image-2605, a model EditForge does not support"),
    # other steps than asked for, and lightning-looking names outside lightx2v's scheme
    ("Qwen-Image-Edit-2509-Lightning-4steps-V1.0-bf16.safetensors", "qwen-image-edit-2509", 8,
     "is distilled for 4 steps, not `lightning=8`"),
    ("qwen_edit_lightning_8step.safetensors", "qwen-image-edit", 8, "is not a Lightning file name EditForge knows"),
])
def test_lightning_file_names(tmp_path, name, family, steps, refusal):
    path = tmp_path / name
    path.write_bytes(b"")
    resolve = lambda force: lightning.resolve_file(FAMILIES[family], steps, path=path, local_dir=None,  # noqa: E731
                                                   force=force)
    if refusal is None:
        assert resolve(force=False) == path
    else:
        with pytest.raises(EditForgeError, match=re.escape(refusal) + r".*\(or `force=True`"):
            resolve(force=False)
    assert resolve(force=True) == path


def test_bad_lightning_values():
    with pytest.raises(EditForgeError, match="`lightning` must be 4 or 8 for qwen-image-edit-2509"):
        editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", lightning=6)
    with pytest.raises(EditForgeError, match="file not found"):
        editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", lightning=8, lightning_path="nope.st")
