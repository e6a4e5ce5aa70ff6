"""Batch jobs from text files, as in Qwen-Image-Lightning's reference script: a prompt per line, and
optionally a line of input images per prompt (several images on a line separated by spaces; quote a
path that contains spaces)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from editforge.errors import EditForgeError
from editforge.files import read_text


@dataclass(frozen=True)
class BatchJob:
    index: int
    prompt: str
    images: tuple[Path, ...]
    line: str = ""  # where the images were given ("images.txt:3"), for messages about them


def _read_lines(path: Path) -> list[str]:
    return read_text(path).splitlines()


def read_jobs(prompts_file: Path, images_file: Path | None = None) -> list[BatchJob]:
    prompts = _read_lines(prompts_file)
    while prompts and not prompts[-1].strip():
        prompts.pop()
    for number, prompt in enumerate(prompts, start=1):
        if not prompt.strip():
            raise EditForgeError(f"{prompts_file}:{number}: empty prompt; remove the line or write a prompt")
    if not prompts:
        raise EditForgeError(f"{prompts_file} has no prompts")
    if images_file is None:
        return [BatchJob(i, p.strip(), ()) for i, p in enumerate(prompts)]
    lines = _read_lines(images_file)
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != len(prompts):
        raise EditForgeError(
            f"{prompts_file} has {len(prompts)} prompts but {images_file} has {len(lines)} image lines; "
            "they pair up line by line"
        )
    jobs = []
    for number, (prompt, line) in enumerate(zip(prompts, lines), start=1):
        try:
            paths = shlex.split(line, posix=True)
        except ValueError as exc:
            raise EditForgeError(f"{images_file}:{number}: {exc}") from exc
        if not paths:
            raise EditForgeError(f"{images_file}:{number}: no image paths on this line")
        base = images_file.parent
        jobs.append(BatchJob(number - 1, prompt.strip(), tuple(_resolve(base, p) for p in paths),
                             f"{images_file}:{number}"))
    return jobs


def _resolve(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() or path.exists() else base / path
