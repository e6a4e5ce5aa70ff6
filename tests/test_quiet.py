"""What a user sees besides EditForge's own lines: nothing. Third-party chatter is silenced message by message,
from the Python API as from the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import run_cli
from tests.helpers import write_lora

API = """
import editforge
pipe = editforge.load_pipeline("tiny-qwen-image-edit-2509", lightning=8, loras=[{lora!r}], device="cpu")
image = editforge.edit(pipe, __import__("PIL.Image").Image.new("RGB", (64, 64)), "make it red", seed=0)
print(image.size)
"""


def test_the_python_api_prints_only_the_tiny_model_build(tmp_path):
    lora = tmp_path / "style.safetensors"
    write_lora(lora, "kohya")
    # a fresh EDITFORGE_HOME: the tiny model is built in this run, which is where the bars and blank lines were
    env = {**os.environ, "EDITFORGE_HOME": str(tmp_path / "home")}
    result = subprocess.run([sys.executable, "-c", API.format(lora=f"{lora}:0.5")], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "(64, 64)"
    # no torchao kernel failures, no torch _pytree deprecations, no peft multi-adapter warning, no progress bars
    assert result.stderr.splitlines() == ["building the offline tiny model tiny-qwen-image-edit-2509 (once)"]


def test_fuse_prints_only_what_it_saved(tmp_path):
    lora = tmp_path / "style.safetensors"
    write_lora(lora, "kohya")
    result = run_cli("fuse", "--model", "tiny-qwen-image-edit-2509", "--lightning", "8", "--lora", f"{lora}:0.5",
                     "--out", tmp_path / "fused")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"saved {tmp_path / 'fused'}"
    assert [line for line in result.stderr.splitlines() if "building the offline tiny model" not in line] == []


def test_progress_bars_come_back_after_a_load(tiny_edit_plus):
    """EditForge turns diffusers' and transformers' bars off while it loads, not for the user's own code."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    import editforge

    editforge.load_pipeline("tiny-qwen-image", device="cpu")
    assert diffusers_logging.is_progress_bar_enabled() and transformers_logging.is_progress_bar_enabled()


def test_a_lora_on_an_fp8_base_is_added_without_peft_caution_about_merging():
    """`train.quantize: fp8`: peft warns that a LoRA on a torchao base cannot be merged; training never merges it."""
    import warnings
    from types import SimpleNamespace

    import torch

    from editforge.benchmark.train import tiny_transformer
    from editforge.models.loading import quantize_transformer
    from editforge.models.registry import FAMILIES
    from editforge.train.config import LoraConfig
    from editforge.train.lora import add_lora

    transformer = tiny_transformer(FAMILIES["qwen-image-edit-2509"], torch.bfloat16)
    quantize_transformer(transformer, "fp8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert add_lora(SimpleNamespace(transformer=transformer), LoraConfig(rank=4, alpha=4))
    assert [str(w.message) for w in caught if "TorchaoLoraLinear" in str(w.message)] == []
