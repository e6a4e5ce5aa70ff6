"""Shared test setup: an isolated EditForge cache, no network, tiny images and tiny models."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# Set before anything imports editforge, and inherited by every subprocess the tests start: one tiny-model
# cache for the whole session, and the hub made unreachable so no test can silently download.
os.environ.setdefault("EDITFORGE_HOME", tempfile.mkdtemp(prefix="editforge-test-home-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", str(Path(os.environ["EDITFORGE_HOME"]) / "hf"))


def noise_image(width: int = 64, height: int = 64, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


@pytest.fixture
def make_image(tmp_path):
    """Write a small noise PNG (or other format) under tmp_path and return its path."""

    def make(name: str = "in.png", width: int = 64, height: int = 64, seed: int = 0) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        noise_image(width, height, seed).save(path)
        return path

    return make


@pytest.fixture(scope="session")
def tiny_edit_plus():
    import editforge

    return editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu")


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m editforge ARGS` in a real subprocess, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "editforge", *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )


@pytest.fixture
def unloadable(tmp_path):
    """A copy of a tiny model whose transformer weights are garbage: it resolves, but loading it fails. An
    error about the request (not about the weights) from it proves the request was checked before the load."""
    import shutil

    from editforge.models.tiny import tiny_model_dir

    def make(name: str) -> str:
        folder = tmp_path / f"unloadable-{name}"
        shutil.copytree(tiny_model_dir(name), folder)
        (folder / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"not safetensors" * 100)
        return str(folder)

    return make
