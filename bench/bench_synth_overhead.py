"""What `editforge synth` costs on top of the model, on a big workbook.

Builds a workbook of --rows rows (default 100,000; --generate of them need a picture, spread over the
sheet), then times:
  * the dry run (read-only load + plan), which must stay under 10 s;
  * a full run with a no-op-cost fake generator: everything except the model (journal, PNG write,
    quality gate, periodic renders of the 100k-row workbook, final save) per generated row.

With --ray-workers N the pictures are made on a local Ray cluster of N one-CPU workers (`RayEngine`), and what
is measured is the driver: its wall and CPU time per generated row (the fake's own time is then spent on the
workers, in parallel; the wall time includes starting the workers, not the cluster).

    python bench/bench_synth_overhead.py [--rows 100000] [--generate 2000] [--ray-workers N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openpyxl
from PIL import Image

from editforge.sheet.fake import fake_generator
from editforge.sheet.synth import SynthOptions, dry_run, synth

HEADERS = ["raw_image", "ref_image_1", "ref_image_2", "ref_image_3", "gen_edit_prompt", "instruction", "need_gen"]


def build(folder: Path, rows: int, generate: int) -> Path:
    (folder / "img").mkdir(parents=True)
    for i in range(16):
        pixels = np.random.default_rng(i).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "img" / f"{i}.png")
    book = openpyxl.Workbook(write_only=True)
    ws = book.create_sheet("data")
    ws.append(HEADERS)
    every = max(rows // generate, 1)
    for i in range(rows):
        wanted = i % every == 0 and i // every < generate
        raw = f"img/{i % 16}.png"
        ref = None if wanted else f"img/{(i + 1) % 16}.png"
        ws.append([raw, ref, None, None, f"make picture {i} look like autumn", "train text", wanted])
    path = folder / "big.xlsx"
    book.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--generate", type=int, default=2_000)
    parser.add_argument("--ray-workers", type=int, default=0, help="make the pictures on a local Ray cluster")
    parser.add_argument("--keep", type=Path, help="build here and keep the files")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-synth-"))
    try:
        started = time.perf_counter()
        path = build(folder, args.rows, args.generate)
        print(f"built {args.rows:,} rows ({args.generate:,} need_gen) in {time.perf_counter() - started:.1f} s")

        started, cpu = time.perf_counter(), time.process_time()
        plan = dry_run(path, SynthOptions())
        # CPU time too: on a shared machine the wall clock also measures the neighbours
        print(f"dry run: {time.perf_counter() - started:.2f} s wall, {time.process_time() - cpu:.2f} s CPU")
        print("  " + plan.replace("\n", "\n  "))

        fake, model_seconds = fake_generator(), [0.0]

        def timed(images, prompt, seed):
            t = time.perf_counter()
            result = fake(images, prompt, seed)
            model_seconds[0] += time.perf_counter() - t
            return result

        engine, make_generator = None, lambda: timed
        if args.ray_workers:
            import ray

            from editforge.sheet.ray_engine import RayEngine

            ray.init(num_cpus=args.ray_workers, include_dashboard=False, log_to_driver=False)
            engine, make_generator = RayEngine(workers=args.ray_workers), fake_generator
            engine.connect()
        started, cpu = time.perf_counter(), time.process_time()
        summary = synth(path, make_generator, SynthOptions(seed=0), engine=engine)
        total, total_cpu = time.perf_counter() - started, time.process_time() - cpu
        n = summary.generated
        overhead = total - model_seconds[0]
        where = f"on {args.ray_workers} Ray workers" if args.ray_workers else f"{model_seconds[0]:.1f} s"
        print(f"run: {summary.line()} in {total:.1f} s (fake model: {where})")
        print(f"overhead per generated row, everything included (load, plan, renders, final save): "
              f"{overhead / n * 1000:.1f} ms wall, {(total_cpu - model_seconds[0]) / n * 1000:.1f} ms CPU")
        print(f"python {platform.python_version()}, openpyxl {openpyxl.__version__}, {platform.machine()}, "
              f"{platform.system()} {platform.release()}")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
