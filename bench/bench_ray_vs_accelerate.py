"""One machine, N workers: `editforge synth --ray local` against `accelerate launch ... editforge synth`.

The same workbook (--rows rows, each needing a reference made from its sample) is filled three times with --model
(default: the tiny Edit-2509 model, on CPU), each copy in its own folder under the same file name (so every PNG's metadata is
the same): by one process, by `accelerate launch --multi_gpu --num_processes N`, and on a local Ray cluster with
N workers. Each as a user runs it, a fresh process from the shell: the wall time includes Python, imports,
the model load and (Ray) starting the cluster. Reported per path: the wall time, the generation rate from the
journal (first to last finished row, so without the start-up) and whether every row's PNG is byte-identical to
the single process's. Every process computes with one CPU thread (accelerate's processes and Ray's one-CPU
workers do by default; the single process is given OMP_NUM_THREADS=1): on CPU the number of threads changes
how float sums are rounded, and so the last bits of some pixels.

    python bench/bench_ray_vs_accelerate.py [--rows 24] [--workers 2] [--steps 4] [--pixels 65536]
    python bench/bench_ray_vs_accelerate.py --model qwen-image-edit-2509 --workers 8 --rows 400 --steps 8 \
        --pixels 1048576                       # the same on a machine with 8 GPUs and the real model
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from editforge.sheet.journal import journal_path
from editforge.sheet.workbook import create_workbook, open_workbook

HEADERS = ["raw_image", "ref_image_1", "ref_image_2", "ref_image_3", "gen_edit_prompt", "need_gen"]


def build(folder: Path, rows: int) -> Path:
    (folder / "img").mkdir(parents=True)
    for i in range(rows):
        pixels = np.random.default_rng(i).integers(0, 256, (96, 128, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "img" / f"{i}.png")
    return create_workbook(folder / "book.xlsx", HEADERS,
                           [[f"img/{i}.png", None, None, None, f"make picture {i} look like autumn", True]
                            for i in range(rows)])


def run(launcher: list[str], path: Path, args, extra: list[str]) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [*launcher, "synth", str(path), *extra, "--model", args.model, "--lightning", "off",
               "--steps", str(args.steps), "--max-pixels", str(args.pixels), "--seed", "1"]
    if args.model.startswith("tiny-"):
        command += ["--condition-pixels", "3136"]  # the tiny model's vision encoder area
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or not done.stdout.startswith(f"generated {args.rows},"):
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    return seconds


def generation_rate(path: Path) -> float:
    """Images per minute from the first finished row to the last: generation without the start-up."""
    finished = sorted(t for (t,) in sqlite3.connect(journal_path(path)).execute(
        "SELECT finished FROM results WHERE status = 'done'"))
    return (len(finished) - 1) / (finished[-1] - finished[0]) * 60


def pictures(path: Path) -> list[bytes]:
    book = open_workbook(path)
    return [(path.parent / str(values["ref_image_1"])).read_bytes() for _, values in book.rows()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-qwen-image-edit-2509")
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--pixels", type=int, default=256 * 256, help="output area (--max-pixels)")
    args = parser.parse_args()
    editforge = [sys.executable, "-m", "editforge"]
    paths = {
        "one process": editforge,
        f"accelerate launch, {args.workers} processes": [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(args.workers),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
            "29531", "-m", "editforge"],
        f"ray local, {args.workers} workers": editforge,
    }
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        results, load = {}, os.getloadavg()
        for i, (name, launcher) in enumerate(paths.items()):
            path = build(root / str(i), args.rows)
            extra = ["--ray", "local", "--workers", str(args.workers)] if name.startswith("ray") else []
            seconds = run(launcher, path, args, extra)
            results[name] = seconds, generation_rate(path), pictures(path)
        reference = results["one process"][2]
        print(f"{args.rows} rows, {args.model}, {args.steps} steps, {args.pixels} px output")
        print("| path | wall (start to exit) | generation rate | PNGs identical to one process |")
        print("| --- | --- | --- | --- |")
        for name, (seconds, rate, pngs) in results.items():
            same = sum(a == b for a, b in zip(pngs, reference))
            print(f"| {name} | {seconds:.1f} s | {rate:.1f} img/min | {same}/{len(reference)} |")
        import ray
        import torch
        print(f"load average before/after: {load[0]:.1f} / {os.getloadavg()[0]:.1f}")
        print(f"python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}, "
              f"{os.cpu_count()} CPUs, {platform.machine()}, {platform.system()} {platform.release()}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
