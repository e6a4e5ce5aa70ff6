"""Fused pipelines load in plain diffusers and match the unfused stack; quantized models still generate."""

import diffusers
import numpy as np
import pytest

import editforge
from editforge.errors import EditForgeError
from editforge.models.info import model_info
from editforge.models.text_encoder import allow_processor_without_video, fix_mrope_positions
from tests.helpers import noise_image, run_cli
from tests.helpers import write_lora


def _pixels(pipe, **kw):
    return np.asarray(editforge.edit(pipe, noise_image(), "make it red", seed=3, **kw), dtype=np.int16)


def test_fuse_saves_a_plain_diffusers_pipeline_with_the_same_output(tmp_path):
    lora = tmp_path / "style.safetensors"
    write_lora(lora, "kohya")
    out = tmp_path / "fused"
    result = run_cli("fuse", "--model", "tiny-qwen-image-edit-2509", "--lightning", "8", "--lora", f"{lora}:0.7",
                     "--out", out)
    assert result.returncode == 0, result.stderr
    unfused = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", lightning=8,
                                      loras=[f"{lora}:0.7"], fuse=False)

    allow_processor_without_video()  # only because this machine has no torchvision
    plain = diffusers.DiffusionPipeline.from_pretrained(out)
    assert type(plain).__name__ == "QwenImageEditPlusPipeline"
    assert plain.scheduler.config.shift_terminal is None  # the Lightning scheduler was saved with it
    fix_mrope_positions(plain.text_encoder)  # what EditForge does to every encoder it loads
    plain.set_progress_bar_config(disable=True)
    a, b = _pixels(unfused), _pixels(plain, steps=8, cfg=1.0, max_pixels=64 * 64, condition_pixels=56 * 56)
    assert np.abs(a - b).max() <= 2, "fused weights must reproduce the unfused LoRA stack"

    # Loaded back through EditForge, the folder keeps its Lightning defaults and records what was fused.
    again = editforge.load_pipeline(str(out), device="cpu")
    assert model_info(again).default_steps == 8 and model_info(again).default_cfg == 1.0
    assert "style.safetensors:0.7" in model_info(again).loras
    with pytest.raises(EditForgeError, match="already has Lightning"):
        editforge.load_pipeline(str(out), device="cpu", lightning=8)


def test_fuse_refuses_a_non_empty_folder_and_nothing_to_fuse(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = run_cli("fuse", "--model", "tiny-qwen-image-edit-2509", "--lightning", "8", "--out", tmp_path)
    assert result.returncode == 2 and "not empty" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("fuse", "--model", "tiny-qwen-image-edit-2509", "--out", tmp_path / "new")
    assert result.returncode == 2 and "nothing to fuse" in result.stderr


@pytest.fixture(scope="module")
def style_lora(tmp_path_factory):
    path = tmp_path_factory.mktemp("lora") / "style.safetensors"
    write_lora(path, "kohya")
    return path


@pytest.fixture(scope="module")
def bf16_fused(style_lora):
    return _pixels(editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", dtype="bf16",
                                           loras=[str(style_lora)]), steps=2)


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_quantized_transformer_keeps_the_fused_lora(kind, style_lora, bf16_fused):
    """Quantized after fusing: close to the bf16 fused result, and clearly not the quantized base without the LoRA
    (what a fuse on an already quantized model gives: optimum-quanto's fuse_lora is a silent no-op there)."""
    quant_pipe = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", dtype="bf16", quantize=kind,
                                         loras=[str(style_lora)])
    assert model_info(quant_pipe).quantize == kind
    quantized = _pixels(quant_pipe, steps=2)
    lost = _pixels(editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", dtype="bf16", quantize=kind),
                   steps=2)
    error, lora_effect = np.abs(quantized - bf16_fused).mean(), np.abs(quantized - lost).mean()
    # measured: int8 0.53 / 3.7, fp8 0.80 / 3.6 mean levels
    assert error < 1.5 and lora_effect > 3 * error, f"{kind}: quantization error {error}, LoRA effect {lora_effect}"


def test_offload_needs_a_gpu_and_quantize_needs_fusing():
    with pytest.raises(EditForgeError, match="needs a CUDA device"):
        editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", offload="model")
    with pytest.raises(EditForgeError, match="fused before quantizing"):
        editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", lightning=8, quantize="int8", fuse=False)
