"""Lightning and user LoRAs: every key layout users meet loads; files that load nothing are errors."""

import math

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import editforge
from editforge.errors import EditForgeError
from editforge.models import lightning
from editforge.models.lora import parse_lora_arg
from editforge.models.registry import FAMILIES
from tests.conftest import noise_image

WIDTH, RANK = 48, 4  # tiny transformer: 3 heads x 16


def _pair(gen):
    return torch.randn(RANK, WIDTH, generator=gen), torch.randn(WIDTH, RANK, generator=gen) * 0.5


def write_lora(path, layout: str) -> None:
    gen = torch.Generator().manual_seed(11)
    tensors = {}
    for block in (0, 1):
        for proj in ("to_q", "to_k", "to_v"):
            down, up = _pair(gen)
            dotted = f"transformer_blocks.{block}.attn.{proj}"
            if layout == "lightning":  # bare lora_down/lora_up/alpha
                tensors |= {f"{dotted}.lora_down.weight": down, f"{dotted}.lora_up.weight": up,
                            f"{dotted}.alpha": torch.tensor(float(RANK))}
            elif layout == "comfy-down-up":
                tensors |= {f"diffusion_model.{dotted}.lora_down.weight": down,
                            f"diffusion_model.{dotted}.lora_up.weight": up,
                            f"diffusion_model.{dotted}.alpha": torch.tensor(float(RANK))}
            elif layout in ("comfy-A-B", "diffusers"):
                prefix = "diffusion_model" if layout == "comfy-A-B" else "transformer"
                tensors |= {f"{prefix}.{dotted}.lora_A.weight": down, f"{prefix}.{dotted}.lora_B.weight": up}
            elif layout == "kohya":
                key = f"lora_unet_transformer_blocks_{block}_attn_{proj}"
                tensors |= {f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                            f"{key}.alpha": torch.tensor(float(RANK))}
            elif layout == "diffsynth":
                tensors |= {f"{dotted}.lora_A.default.weight": down, f"{dotted}.lora_B.default.weight": up}
            elif layout == "bare-A-B-no-alpha":
                tensors |= {f"{dotted}.lora_A.weight": down, f"{dotted}.lora_B.weight": up}
            elif layout == "other-model":
                tensors |= {f"unet.down_blocks.{block}.{proj}.lora_A.weight": down,
                            f"unet.down_blocks.{block}.{proj}.lora_B.weight": up}
    save_file(tensors, str(path))


def _pixels(pipe):
    return np.asarray(editforge.edit(pipe, noise_image(), "make it red", seed=0, steps=2), dtype=np.int16)


@pytest.fixture(scope="module")
def base_pixels():
    return _pixels(editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu"))


@pytest.mark.parametrize("layout", ["lightning", "comfy-down-up", "comfy-A-B", "diffusers", "kohya", "diffsynth"])
def test_every_known_layout_loads_and_changes_the_output(tmp_path, layout, base_pixels):
    path = tmp_path / f"{layout}.safetensors"
    write_lora(path, layout)
    pipe = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", loras=[str(path)])
    assert np.abs(_pixels(pipe) - base_pixels).max() > 0
    assert pipe.editforge_info["loras"] == [f"{layout}.safetensors:1"]


@pytest.mark.parametrize("layout", ["bare-A-B-no-alpha", "other-model"])
def test_a_lora_that_matches_nothing_is_an_error(tmp_path, layout):
    path = tmp_path / f"{layout}.safetensors"
    write_lora(path, layout)
    with pytest.raises(EditForgeError, match="none of its keys match"):
        editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", loras=[str(path)])


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
    info = pipe.editforge_info
    assert (info["default_steps"], info["default_cfg"]) == (8, 1.0)
    assert info["lightning_file"] == "Qwen-Image-Edit-2509-Lightning-8steps-V1.0-bf16.safetensors"
    _, params = editforge.generate(pipe, [noise_image()], "x", seed=0)
    assert params["steps"] == 8 and params["cfg"] == 1.0


def test_lightning_file_for_another_family_is_refused(tmp_path):
    wrong = tmp_path / "Qwen-Image-Edit-Lightning-8steps-V1.0-bf16.safetensors"  # v1 Edit, not 2509
    write_lora(wrong, "lightning")
    with pytest.raises(EditForgeError, match="for qwen-image-edit, but the model is qwen-image-edit-2509"):
        editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", lightning=8, lightning_path=wrong)
    pipe = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", lightning=8, lightning_path=wrong,
                                   force=True)
    assert pipe.editforge_info["lightning_file"] == wrong.name


def test_lightning_files_are_named_per_family():
    for family in FAMILIES.values():
        for steps, filename in family.lightning_files.items():
            assert lightning.family_of_file(filename) is family
            assert f"{steps}steps" in filename


def test_bad_lightning_values():
    with pytest.raises(EditForgeError, match="one of 4, 8"):
        editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", lightning=6)
    with pytest.raises(EditForgeError, match="file not found"):
        editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", lightning=8, lightning_path="nope.st")
