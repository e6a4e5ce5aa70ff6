"""The full-size plan: the published Qwen-Image architectures run through EditForge's own code on a fake GPU.

    result = run_plan()             # what `editforge bench plan --json plan.json` writes
    result["rows"]                  # one per stage and configuration: flops, peak_bytes and its parts, host syncs
    result["fit"]                   # which configurations fit 24 / 40 / 48 / 80 GB cards

No GPU and no weights: shapes, dtypes, FLOPs and memory do not depend on either, so they are measured with
fake tensors (`editforge.plan.fake`) and torch's memory tracker (`editforge.plan.memory`). Modules:
    fake      the fake GPU: fake tensors, known small values, fused attention, the host-sync log
    flops     FLOPs by torch's formulas (plus the int8 matmul op of optimum-quanto)
    memory    peak memory per stage, split into weights, activations, gradients and optimizer states
    models    the full-size pipelines on the fake GPU
    stages    generation stages (editforge.generate) and one training step (editforge.train's functions)
    depth     training steps of 60 blocks from steps of 2 and 3 (affine in the depth)
    fit       which configuration fits which card
    report    the markdown tables of docs/benchmarks.md
"""

from __future__ import annotations

from itertools import product

from editforge.progress import Progress

# What the plan measures. Generation: each edit family at its default size with 1..max references, and
# Qwen-Image text-to-image; the transformer in bf16, fp8 and int8. Training: Edit-2509, rank 32, gradient
# checkpointing, at 512 and 1024 with 1 and 2 controls, batch 1 and 2, on a bf16, fp8 and int8 base.
GENERATION = (("qwen-image-edit-2509", (1, 2, 3)), ("qwen-image-edit-2511", (1,)), ("qwen-image-edit", (1,)),
              ("qwen-image", (0,)))
QUANTIZED = ("fp8", "int8")
TRAIN_BASES = ("bf16", "fp8", "int8")
TRAIN_SIZES = (512, 1024)
TRAIN_CONTROLS = (1, 2)
TRAIN_BATCHES = (1, 2)
SWAPPED = (8, 16, 30, 45)  # train.blocks_to_swap rows of every training configuration (of 60 blocks)
SWAP_CHECK = 16            # the swapped configuration also run at full depth
NOT_TRACED = [
    "the decoded image's conversion to a PIL picture on the host (postprocess): a fake tensor has no pixels; "
    "the device-to-host copy it makes is the last step of a generation, after the denoising loop",
    "the contents of every tensor: values derived from the weights are unknown, so a host read of one (a "
    "loss, a gradient norm) goes on with 0 and is listed in the row's notes",
    "autocast: on the fake device, bf16 mixed precision does not re-cast matmul inputs; the LoRA branches run "
    "in fp32 as peft casts them (a few MB of activations more than on a GPU)",
]


def run_plan(*, full_depth_check: bool = True, progress: Progress | None = None) -> dict:
    """Run every stage of the plan; `progress` hears one item per configuration (a few seconds to a minute
    each on a 2-core CPU)."""
    from editforge.plan import depth, fit, models, stages
    from editforge.plan.fake import FakeGPU

    progress = progress or Progress()
    training = list(product(TRAIN_BASES, TRAIN_SIZES, TRAIN_CONTROLS, TRAIN_BATCHES))
    # (base, swapped blocks) of the 1024² configuration also run at full depth, against their extrapolation
    full_depth = [("bf16", 0), *((base, SWAP_CHECK) for base in TRAIN_BASES)] if full_depth_check else []
    progress.start("full-size plan", total=len(GENERATION) + len(QUANTIZED) + 2 * len(training) + len(full_depth),
                   unit="config")
    rows: list[stages.Row] = []
    for family, references in GENERATION:
        rows += stages.generation_rows(family, list(references))
        progress.advance(description=f"generation: {family}")
    for quantize in QUANTIZED:
        rows += [r for r in stages.generation_rows("qwen-image-edit-2509", [1, 2], quantize=quantize)
                 if r.stage == "denoise_step"]
        progress.advance(description=f"generation: {quantize} transformer")
    text_tokens = {r.references: r.text_tokens for r in rows
                   if r.stage == "text_encode" and r.model == "qwen-image-edit-2509"}
    for base, size, controls, batch in training:
        def step(d: int, swapped: int = 0) -> stages.Row:
            return stages.training_row(size, controls, batch, base, text_tokens=text_tokens[controls], depth=d,
                                       blocks_to_swap=swapped)

        # a quantized base's backward peak moves with the depth (see editforge.plan.depth): measured at full depth
        rows.append(depth.extrapolate(*[step(d) for d in depth.SHORT_DEPTHS], stages.FULL_DEPTH) if base == "bf16"
                    else step(stages.FULL_DEPTH))
        progress.advance(description=f"training: {base} base, {size}²")
        plane = [step(d, swapped) for d, swapped in depth.SWAP_POINTS]
        rows += [depth.extrapolate(*plane[:2], stages.FULL_DEPTH, more_swapped=plane[2], swapped=swapped)
                 for swapped in SWAPPED]
        progress.advance(description=f"training: {base} base, {size}², blocks swapped")
    checks = []
    for base, swapped in full_depth:
        full = stages.training_row(1024, 1, 1, base, text_tokens=text_tokens[1], blocks_to_swap=swapped)
        estimate = next(r for r in rows if (r.stage, r.dtype, r.size, r.references, r.batch, r.blocks_swapped) ==
                        ("train_step", base, 1024, 1, 1, swapped))
        checks.append({"full_depth": full.as_dict(), "extrapolated": estimate.as_dict(), "blocks_swapped": swapped,
                       "base": base,
                       "relative_error": {k: abs(getattr(estimate, k) - getattr(full, k)) / max(getattr(full, k), 1)
                                          for k in ("flops", "peak_bytes", "activations", "weights", "copied_bytes")}})
        progress.advance(description=f"training at full depth (60 blocks, {base} base, {swapped} swapped)")
    with FakeGPU() as gpu:
        pipe = models.pipeline(gpu, "qwen-image-edit-2509")
        components = {"text_encoder": fit.component_sizes(pipe.text_encoder),
                      "vae": fit.component_sizes(pipe.vae)}
        for dtype in ("bf16", *QUANTIZED):
            transformer = models.transformer(gpu)
            if dtype != "bf16":
                from editforge.models.loading import quantize_transformer

                quantize_transformer(transformer, dtype)
            components[f"transformer:{dtype}"] = fit.component_sizes(transformer)
    row_dicts = [r.as_dict() for r in rows]
    fits = fit.generation_fits(row_dicts, components) + fit.training_fits(row_dicts)
    return {
        "rows": row_dicts,
        "components": components,
        "fit": [f.as_dict() for f in fits],
        "cards": fit.CARDS,
        "assumptions": {"cuda_context_bytes": fit.CUDA_CONTEXT, "allocator_slack": fit.ALLOCATOR_SLACK},
        "depth_checks": checks,
        "not_traced": NOT_TRACED,
    }
