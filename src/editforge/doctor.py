"""`editforge doctor`: what this machine has, so a bug report or a slow run explains itself."""

from __future__ import annotations

import importlib.metadata
import platform

from rich.console import Console
from rich.table import Table

from editforge.models.registry import FAMILIES, TINY_MODELS, tiny_folder

# What EditForge runs on (pyproject.toml's dependencies and extras; a test keeps them in step), then the
# optional packages some settings need: ray (synth --ray), bitsandbytes (train.optimizer adamw8bit), deepspeed (ZeRO-2).
PACKAGES = ("editforge", "torch", "diffusers", "transformers", "tokenizers", "huggingface-hub", "peft", "accelerate",
            "safetensors", "numpy", "pillow", "openpyxl", "typer", "rich", "pydantic", "pyyaml", "imagehash", "pyarrow",
            "psutil", "filelock", "gguf", "defusedxml", "optimum-quanto", "torchao", "starlette", "uvicorn", "tensorboard",
            "ray", "bitsandbytes", "deepspeed")


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def report(console: Console) -> None:
    import psutil
    import torch

    versions = Table(title="versions", show_header=False)
    versions.add_row("python", platform.python_version())
    for name in PACKAGES:
        versions.add_row(name, _version(name))
    console.print(versions)

    devices = Table(title="devices")
    for column in ("device", "name", "free", "total"):
        devices.add_column(column)
    memory = psutil.virtual_memory()
    devices.add_row("cpu", platform.processor() or platform.machine(), _gib(memory.available), _gib(memory.total))
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        free, total = torch.cuda.mem_get_info(index)
        devices.add_row(f"cuda:{index}", torch.cuda.get_device_name(index), _gib(free), _gib(total))
    console.print(devices)

    models = Table(title="models cached locally")
    models.add_column("model")
    models.add_column("where")
    for name in TINY_MODELS:
        folder = tiny_folder(name)
        models.add_row(name, str(folder) if folder.is_dir() else "[dim]built on first use[/]")
    cached = _hub_cache()
    lightning_repos = dict.fromkeys(f.lightning_repo for f in FAMILIES.values())
    for repo in [f.hub_id for f in FAMILIES.values()] + list(lightning_repos):
        models.add_row(repo, cached.get(repo, "[dim]not cached[/]"))
    console.print(models)


def _hub_cache() -> dict[str, str]:
    from huggingface_hub import scan_cache_dir

    try:
        return {repo.repo_id: f"{repo.size_on_disk_str} in {repo.repo_path}" for repo in scan_cache_dir().repos}
    except Exception:  # no cache folder yet, or an unreadable one: nothing is cached
        return {}
