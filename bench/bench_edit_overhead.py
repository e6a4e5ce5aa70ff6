"""EditForge's per-call overhead over a bare diffusers pipeline, on the tiny Edit-2509 model (CPU).

Both sides do identical work: same components, scheduler, seed, inputs and sizes (the bare pipeline's
size constants are set by hand to the tiny sizes). The target is overhead < 10%.

    .venv/bin/python bench/bench_edit_overhead.py [--reps 30] [--steps 4]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time

import diffusers
import torch
from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as plus_module

import editforge
from editforge.inference.sizes import output_size
from editforge.models.registry import TINY_CONDITION_PIXELS, TINY_MAX_PIXELS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(1)  # steadier timings on a shared 2-core machine

    pipe = editforge.load_pipeline("tiny-qwen-image-edit-2509", device="cpu", lightning=8)
    components = dict(pipe.components, scheduler=copy.deepcopy(pipe.scheduler))
    bare = diffusers.QwenImageEditPlusPipeline(**components)
    bare.set_progress_bar_config(disable=True)
    rng = torch.Generator().manual_seed(0)
    images = [
        diffusers.utils.numpy_to_pil((torch.rand(1, 96, 128, 3, generator=rng)).numpy())[0] for _ in range(2)
    ]
    width, height = output_size(TINY_MAX_PIXELS, images[-1].size)

    def run_editforge():
        editforge.edit(pipe, images, "make the sky red", seed=1, steps=args.steps)

    def run_bare():
        plus_module.VAE_IMAGE_SIZE, plus_module.CONDITION_IMAGE_SIZE = TINY_MAX_PIXELS, TINY_CONDITION_PIXELS
        with torch.inference_mode():
            bare(image=images, prompt="make the sky red", num_inference_steps=args.steps, true_cfg_scale=1.0,
                 width=width, height=height, generator=torch.Generator("cpu").manual_seed(1))

    timings = {"diffusers": [], "editforge": []}
    for fn in (run_bare, run_editforge):  # warm-up
        fn()
    for _ in range(args.reps):  # interleaved, so drift in machine load hits both alike
        for name, fn in (("diffusers", run_bare), ("editforge", run_editforge)):
            start = time.perf_counter()
            fn()
            timings[name].append(time.perf_counter() - start)

    bare_ms = statistics.median(timings["diffusers"]) * 1000
    ours_ms = statistics.median(timings["editforge"]) * 1000
    overhead = (ours_ms - bare_ms) / bare_ms * 100
    print(f"python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers.__version__}, "
          f"{platform.machine()}, {args.reps} reps x {args.steps} steps, 2 refs, {width}x{height}")
    print(f"| bare diffusers | {bare_ms:.1f} ms |\n| editforge.edit | {ours_ms:.1f} ms |\n| overhead | {overhead:+.1f}% |")
    sys.exit(0 if overhead < 10 else 1)


if __name__ == "__main__":
    main()
