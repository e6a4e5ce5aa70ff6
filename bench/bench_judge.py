"""What the judge costs next to generation, on the tiny Edit-2509 model (CPU): per row, and batched vs one by one.

Generates --rows pairs (2 references each) with the tiny pipeline (Lightning 8, its default 64x64 output),
then scores them with the pipeline's own text encoder one at a time and in batches of --batch-size, with and
without a greedy reason. Reports medians per row (wall and CPU: on a shared machine the wall clock also
measures the neighbours). Tiny-model ratios show EditForge's own overhead, not full-size cost (see
docs/judge.md for the full-size arithmetic).

    python bench/bench_judge.py [--rows 16] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
from PIL import Image


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    import diffusers
    import torch
    import transformers

    import editforge
    from editforge.judge import Pair, explain_pairs, judge_from_pipeline, score_pairs

    pipe = editforge.load_pipeline("tiny-qwen-image-edit-2509", lightning=8, device="cpu")
    rng = np.random.default_rng(0)
    refs = [[Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(2)]
            for _ in range(args.rows)]
    editforge.edit(pipe, refs[0], "warm up", seed=0)
    generated, gen_times = [], []
    for i, images in enumerate(refs):
        image, wall, cpu = timed(lambda: editforge.edit(pipe, images, f"make picture {i} look like autumn", seed=i))
        generated.append(Pair(tuple(images), image, f"make picture {i} look like autumn"))
        gen_times.append((wall, cpu))
    judge = judge_from_pipeline(pipe)
    score_pairs(judge, generated[:1])  # warm up

    def per_row(fn, batch):
        walls, cpus = [], []
        for start in range(0, len(generated), batch):
            chunk = generated[start:start + batch]
            _, wall, cpu = timed(lambda: fn(judge, chunk, batch_size=batch))
            walls += [wall / len(chunk)] * len(chunk)
            cpus += [cpu / len(chunk)] * len(chunk)
        return statistics.median(walls), statistics.median(cpus)

    gen = statistics.median(w for w, _ in gen_times), statistics.median(c for _, c in gen_times)
    rows = [("generation (Lightning 8 steps, 2 refs, 64x64)", gen)]
    for label, fn in (("judge score", score_pairs), ("judge score + reason", lambda j, p, batch_size: (
            score_pairs(j, p, batch_size=batch_size), explain_pairs(j, p, batch_size=batch_size)))):
        for batch in (1, args.batch_size):
            rows.append((f"{label}, batch {batch}", per_row(fn, batch)))

    print(f"date {time.strftime('%Y-%m-%d')}, {platform.machine()} {platform.system()} {platform.release()}, "
          f"{torch.get_num_threads()} torch threads; python {platform.python_version()}, torch {torch.__version__}, "
          f"diffusers {diffusers.__version__}, transformers {transformers.__version__}; {args.rows} rows")
    print("| what | wall per row | CPU per row | relative to generation (wall) |")
    print("| --- | --- | --- | --- |")
    for label, (wall, cpu) in rows:
        print(f"| {label} | {wall * 1e3:.1f} ms | {cpu * 1e3:.1f} ms | {wall / gen[0] * 100:.0f}% |")


if __name__ == "__main__":
    main()
