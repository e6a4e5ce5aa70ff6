"""Shared test setup: an isolated EditForge cache, no network, tiny images and tiny models."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Set before anything imports editforge, and inherited by every subprocess the tests start: one tiny-model
# cache for the whole session, and the hub made unreachable so no test can silently download.
os.environ.setdefault("EDITFORGE_HOME", tempfile.mkdtemp(prefix="editforge-test-home-"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", str(Path(os.environ["EDITFORGE_HOME"]) / "hf"))


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): tiny matmuls gain
    nothing from threads, and on a shared 2-core box threads spin against each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_image(tmp_path):
    """Write a small noise PNG (or other format) under tmp_path and return its path."""
    from tests.helpers import write_image

    def make(name: str = "in.png", width: int = 64, height: int = 64, seed: int = 0) -> Path:
        return write_image(tmp_path / name, seed, (width, height))

    return make


@pytest.fixture
def generated(tmp_path) -> Path:
    """A workbook whose rows 2-4 synth has filled (fake generator), as a reviewer finds it."""
    from tests.helpers import REVIEW_ROWS, make_workbook, run_synth

    path = make_workbook(tmp_path, REVIEW_ROWS)
    run_synth(path, seed=7)
    return path


@pytest.fixture
def cli(monkeypatch, capsys, tmp_path):
    """`editforge ARGS` in this process, from tmp_path unless `cwd` says otherwise: (exit code, stdout, stderr)."""
    from tests.helpers import cli_in_process

    def run(*args, cwd=None):
        return cli_in_process(monkeypatch, capsys, cwd or tmp_path, *args)

    return run


@pytest.fixture(scope="session")
def tiny_edit_plus():
    import editforge

    return editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu")


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


# Fixtures that live with their stand-ins, offered to every test module.
from tests.standins import hopper_with_flash_attention  # noqa: E402,F401
