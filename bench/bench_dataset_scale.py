"""`editforge dataset check` and `export` on a big dataset, and re-exports that find little to do.

    python bench/bench_dataset_scale.py [--samples 100000] [--data DIR] [--only check|export]

Builds --samples samples once under --data (a 64x64 target and control each, distinct pictures:
blocky noise, so their perceptual hashes differ as real photos' do, and a DiffSynth metadata.csv),
then runs the real commands in subprocesses, as a user does, and times them from start to exit:
  * check (--min-side 16: the pictures are tiny on purpose, a warning for each would only add output);
  * export --format diffsynth into a new folder;
  * the same export again, nothing changed;
  * again after 1% of the targets changed (new pixels and modification time): the files rewritten are
    counted by inode (every written file is renamed into place, so a rewritten one has a new inode).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def picture(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((64, 64), Image.NEAREST)


def generate(root: Path, samples: int) -> Path:
    metadata = root / "metadata.csv"
    if metadata.is_file():
        return metadata
    rng = np.random.default_rng(0)
    lines = ["image,edit_image,prompt"]
    for i in range(samples):
        folder = root / "img" / f"{i // 1000:03d}"  # a thousand a folder, as big datasets are laid out
        folder.mkdir(parents=True, exist_ok=True)
        for role in ("t", "c"):
            picture(rng).save(folder / f"{role}{i:06d}.png", compress_level=1)
        lines.append(f"img/{i // 1000:03d}/t{i:06d}.png,img/{i // 1000:03d}/c{i:06d}.png,edit number {i}")
    metadata.write_text("\n".join(lines) + "\n")
    return metadata


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "editforge", *command], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    return time.perf_counter() - started, proc


def inodes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_ino for p in folder.rglob("*") if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "editforge-bench-dataset")
    parser.add_argument("--only", choices=("check", "export"))
    args = parser.parse_args()

    started = time.perf_counter()
    metadata = generate(args.data / f"{args.samples}", args.samples)
    print(f"data: {metadata} ({time.perf_counter() - started:.1f} s to generate or find)")
    images = 2 * args.samples

    if args.only in (None, "check"):
        seconds, proc = timed(["dataset", "check", str(metadata), "--json", "--min-side", "16"])
        if proc.returncode not in (0, 1):
            sys.exit(f"check failed ({proc.returncode}): {proc.stderr[-2000:]}")
        print(f"check: {seconds:.1f} s ({images / seconds:.0f} images/s), exit {proc.returncode}, "
              f"{proc.stdout.count('near_duplicate')} near-duplicate lines")

    if args.only in (None, "export"):
        out = args.data / f"{args.samples}-export"
        shutil.rmtree(out, ignore_errors=True)
        export = ["dataset", "export", str(metadata), "--format", "diffsynth", "--model-family",
                  "qwen-image-edit", "--out", str(out)]
        for label in ("export into a new folder", "export again, nothing changed"):
            seconds, proc = timed(export)
            if proc.returncode != 0:
                sys.exit(f"export failed ({proc.returncode}): {proc.stderr[-2000:]}")
            print(f"{label}: {seconds:.1f} s ({images / seconds:.0f} images/s)")
        before = inodes(out)
        rng = np.random.default_rng(1)
        changed = rng.choice(args.samples, size=args.samples // 100, replace=False)
        for i in changed:
            picture(rng).save(args.data / f"{args.samples}" / "img" / f"{i // 1000:03d}" / f"t{i:06d}.png",
                              compress_level=1)
        seconds, proc = timed(export)
        if proc.returncode != 0:
            sys.exit(f"export failed ({proc.returncode}): {proc.stderr[-2000:]}")
        after = inodes(out)
        rewritten = sorted(name for name, inode in after.items() if before.get(name) != inode)
        print(f"export again, {len(changed)} targets changed: {seconds:.1f} s, {len(rewritten)} files rewritten "
              f"({sum(n.startswith('target/') for n in rewritten)} targets, the rest: "
              f"{[n for n in rewritten if not n.startswith('target/')]})")
    print(f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.system()} {platform.release()}")


if __name__ == "__main__":
    main()
