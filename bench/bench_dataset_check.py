"""Benchmark `editforge dataset check` on N small-image samples (target + one control each).

    .venv/bin/python bench/bench_dataset_check.py --samples 10000 --size 128

Generates the data set itself (noise PNGs and a DiffSynth metadata.csv under --data, reused when
present), then times the real command in a subprocess, as a user runs it, and prints one line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def generate(root: Path, samples: int, size: int) -> Path:
    metadata = root / "metadata.csv"
    if metadata.is_file() and sum(1 for _ in open(metadata)) == samples + 1:
        return metadata
    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True, exist_ok=True)
    lines = ["image,edit_image,prompt"]
    for i in range(samples):
        for role in ("t", "c"):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / "img" / f"{role}{i:05d}.png", compress_level=1)
        lines.append(f"img/t{i:05d}.png,img/c{i:05d}.png,edit number {i}")
    metadata.write_text("\n".join(lines) + "\n")
    return metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "editforge-bench-dataset-check")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()

    started = time.perf_counter()
    metadata = generate(args.data / f"{args.samples}x{args.size}", args.samples, args.size)
    print(f"data: {metadata} ({time.perf_counter() - started:.1f} s to generate or find)", file=sys.stderr)
    command = [sys.executable, "-m", "editforge", "dataset", "check", str(metadata), "--json"]
    if args.workers:
        command += ["--workers", str(args.workers)]
    started = time.perf_counter()
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        sys.exit(f"check failed with exit code {proc.returncode}")
    images = 2 * args.samples
    print(f"dataset check: {args.samples} samples, {images} images of {args.size}x{args.size} px, "
          f"{os.cpu_count()} cores: {seconds:.1f} s wall ({images / seconds:.0f} images/s), exit {proc.returncode}")


if __name__ == "__main__":
    main()
