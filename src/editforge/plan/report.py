"""The plan as markdown: the tables `docs/benchmarks.md` holds, made from `run_plan()`'s result (or its JSON)."""

from __future__ import annotations

from editforge.plan.fit import CARDS, GiB

# Published dense bf16 tensor rates (without sparsity) and memory bandwidths, for the roofline model.
GPUS = {
    "H100 SXM": (989e12, 3.35e12),
    "H200 SXM": (989e12, 4.8e12),
    "A100 80GB SXM": (312e12, 2.04e12),
    "RTX 4090": (165e12, 1.01e12),
}
# The share of the peak rate a well-fed transformer step reaches (EditForge's own target, docs/benchmarks.md).
ACHIEVABLE = 0.6
# Host-to-device copy rates from pinned memory over x16 links: about 80% of the links' 31.5 and 63 GB/s. (The RTX
# 4090 is a PCIe 4 card; the PCIe 5 column is what a PCIe 5 card of its speed, e.g. an RTX 5090, would see.)
PCIE = {"PCIe 4.0": 25e9, "PCIe 5.0": 50e9}
SWAP_CARD = "RTX 4090"  # the 24 GB card block swap is for: its compute hides the copies


def _gib(n: int) -> str:
    return f"{n / GiB:.1f}"


def _flops(n: int) -> str:
    return f"{n:.3g}"


def stage_table(rows: list[dict]) -> str:
    lines = ["| stage | model | size | refs | batch | dtype | FLOPs | peak GiB | weights | activations | gradients "
             "| optimizer | host syncs | text tokens |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['model']} | {r['size']} | {r['references']} | {r['batch']} | {r['dtype']} "
                     f"| {_flops(r['flops'])} | {_gib(r['peak_bytes'])} | {_gib(r['weights'])} "
                     f"| {_gib(r['activations'])} | {_gib(r['gradients'])} | {_gib(r['optimizer'])} "
                     f"| {r['host_syncs']} | {r['text_tokens']} |")
    return "\n".join(lines)


def sync_table(rows: list[dict]) -> str:
    """Every host sync site, per stage (the first configuration that shows it)."""
    lines = ["| stage | syncs per call | kind | where | count |", "| --- | --- | --- | --- | --- |"]
    seen = set()
    for r in rows:
        for site in r["sync_sites"]:
            key = (r["stage"], site["kind"], site["where"])
            if key not in seen:
                seen.add(key)
                lines.append(f"| {r['stage']} | {r['host_syncs']} | {site['kind']} | `{site['where']}` | {site['count']} |")
    return "\n".join(lines)


def fit_table(fits: list[dict]) -> str:
    cards = list(CARDS)
    lines = ["| what | model | configuration | needs GiB | " + " | ".join(c.split(" (")[0] for c in cards) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in cards) + " |"]
    for f in fits:
        marks = " | ".join("✓" if f["fits"][c] else "✗" for c in cards)
        lines.append(f"| {f['what']} | {f['model']} | {f['config']} | {_gib(f['needs_bytes'])} | {marks} |")
    return "\n".join(lines)


def defaults_table(result: dict) -> str:
    """What a user gets by default on each card: synth/edit (Edit-2509, bf16, no offload) is checked before
    loading (editforge.models.memory) and refused with an offer when it does not fit; training's default
    (bf16 base, rank 16 — measured at 32 —, 1024², 1 control, batch 1) is the measured training row."""
    from editforge.models.memory import PREFERENCE
    from editforge.plan.fit import memory_table, needs

    table = memory_table(result)["generation"]["qwen-image-edit-2509"]
    train = next(r for r in result["rows"] if (r["stage"], r["dtype"], r["size"], r["references"], r["batch"],
                                               r["blocks_swapped"]) == ("train_step", "bf16", 1024, 1, 1, 0))
    lines = ["| card | synth / edit default (bf16, no offload) | training default (bf16 base, 1024², batch 1) |",
             "| --- | --- | --- |"]
    for card, total in CARDS.items():
        if table["bf16/none"] <= total:
            synth = f"runs ({_gib(table['bf16/none'])} GiB)"
        else:
            offer = next((k for k in PREFERENCE if table.get(k, total + 1) <= total), None)
            synth = "refused before loading; offers " + (f"`{offer}` ({_gib(table[offer])} GiB)" if offer else "nothing")
        need = needs(train["peak_bytes"])
        training = f"fits ({_gib(need)} GiB)" if need <= total else f"does not fit ({_gib(need)} GiB)"
        lines.append(f"| {card} | {synth} | {training} |")
    return "\n".join(lines)


def roofline_table(rows: list[dict]) -> str:
    """Seconds per denoising step, image (8 Lightning steps + text + VAE) and training sample: a model, not a
    measurement. time = max(FLOPs / (peak rate x ACHIEVABLE), bytes read / bandwidth)."""
    def seconds(flops: int, nbytes: int, rate: float, bandwidth: float) -> float:
        return max(flops / (rate * ACHIEVABLE), nbytes / bandwidth)

    def row(stage, **match):
        return next(r for r in rows if r["stage"] == stage and all(r[k] == v for k, v in match.items()))

    edit = dict(model="qwen-image-edit-2509", references=1, dtype="bf16")
    step, text = row("denoise_step", **edit), row("text_encode", **edit)
    encode, decode = row("vae_encode", **edit), row("vae_decode", **edit)
    train = row("train_step", dtype="bf16", size=1024, references=1, batch=1, blocks_swapped=0)
    lines = ["| GPU | denoise step (s) | image, 8 steps (s) | training step 1024², 1 control (s) |",
             "| --- | --- | --- | --- |"]
    for name, (rate, bandwidth) in GPUS.items():
        per_step = seconds(step["flops"], step["weights"], rate, bandwidth)
        image = 8 * per_step + sum(seconds(r["flops"], 0, rate, bandwidth) for r in (text, encode, decode))
        training = seconds(train["flops"], 2 * train["weights"], rate, bandwidth)
        lines.append(f"| {name} | {per_step:.3f} | {image:.2f} | {training:.2f} |")
    return "\n".join(lines)


def swap_table(rows: list[dict]) -> str:
    """Training with `train.blocks_to_swap`: the measured bytes, and the seconds the copies add per step on PCIe 4
    and 5 (a model, not a measurement)."""
    from editforge.plan.fit import CARDS, needs, training_label

    rate = GPUS[SWAP_CARD][0] * ACHIEVABLE
    card = CARDS["24 GB (RTX 3090/4090, A10)"]
    lines = ["| configuration | peak GiB | needs GiB | fits 24 GB | pinned CPU GiB | copied host→device GiB/step | "
             + " | ".join(f"copy s ({link})" for link in PCIE) + f" | {SWAP_CARD} step s | "
             + " | ".join(f"added s ({link})" for link in PCIE) + " |",
             "| --- | --- | --- | --- | --- | --- | " + " | ".join("---" for _ in range(2 * len(PCIE) + 1)) + " |"]
    for r in rows:
        if r["stage"] != "train_step" or (r["size"], r["references"], r["batch"]) != (1024, 1, 1):
            continue
        step = r["flops"] / rate
        copies = [r["copied_bytes"] / bandwidth for bandwidth in PCIE.values()]
        added = [_added_seconds(copy, step, r["blocks_swapped"], r["depth"]) for copy in copies]
        lines.append(f"| {training_label(r)} | {_gib(r['peak_bytes'])} | {_gib(needs(r['peak_bytes']))} "
                     f"| {'✓' if needs(r['peak_bytes']) <= card else '✗'} | {_gib(r['pinned_bytes'])} "
                     f"| {_gib(r['copied_bytes'])} | " + " | ".join(f"{c:.2f}" for c in copies)
                     + f" | {step:.2f} | " + " | ".join(f"{a:.2f}" for a in added) + " |")
    return "\n".join(lines)


def _added_seconds(copy: float, step: float, swapped: int, depth: int) -> float:
    """The copy time the compute does not hide. A step passes over the swapped blocks twice: the forward pass
    (a quarter of the step's FLOPs) and the backward pass (recomputation and gradients: the other three
    quarters). In each pass the first swapped block waits for its copy; every other copy runs on the side stream
    while the previous block computes, and shows only where it takes longer than that block's share of the pass."""
    if not swapped:
        return 0.0
    per_use = copy / (2 * swapped)
    return sum(per_use + (swapped - 1) * max(0.0, per_use - step * share / depth) for share in (0.25, 0.75))


def markdown(result: dict) -> str:
    generation = [r for r in result["rows"] if r["stage"] != "train_step"]
    training = [r for r in result["rows"] if r["stage"] == "train_step" and not r["blocks_swapped"]]
    parts = ["### Stages (generation)", stage_table(generation), "", "### One training step", stage_table(training),
             "", "### Training with swapped blocks (1024², 1 control, batch 1)", swap_table(result["rows"]), "",
             f"Copy seconds: the bytes at {', '.join(f'{b / 1e9:.0f} GB/s' for b in PCIE.values())} "
             f"({', '.join(PCIE)} x16 from pinned memory, about 80% of the link). Added seconds (a model, not a "
             f"measurement): in each of a step's two passes over the swapped blocks (forward: a quarter of the "
             f"step's FLOPs; recomputation and backward: three quarters) the first block waits for its copy, and "
             f"every other copy shows only where it takes longer than the previous block's share of that pass; the "
             f"step is the roofline time on an {SWAP_CARD} (below).", "",
             "### Host syncs", sync_table(result["rows"]), "", "### Fit", fit_table(result["fit"]), "",
             "### What the defaults do on each card", defaults_table(result), "",
             f"Assumed on top of the plan's peak: the CUDA context, {_gib(result['assumptions']['cuda_context_bytes'])} "
             f"GiB, and {result['assumptions']['allocator_slack']:.0%} allocator slack.", "",
             "### Roofline (a model, not a measurement)", roofline_table(result["rows"]), "",
             f"time = max(FLOPs / (peak bf16 rate × {ACHIEVABLE}), bytes read / memory bandwidth); a denoising step "
             "reads the transformer's weights once, a training step twice (forward and recomputed forward). "
             "Peak rates: " + ", ".join(f"{n} {r / 1e12:.0f} TFLOP/s, {b / 1e12:.2f} TB/s" for n, (r, b) in GPUS.items())]
    for check in result.get("depth_checks", []):
        measured_at = "(4, 3 swapped), (5, 3) and (5, 4)" if check["blocks_swapped"] else "2 and 3"
        parts += ["", f"Depth check (training, {check['base']} base, 1024², 1 control, batch 1, "
                  f"{check['blocks_swapped']} blocks swapped; 60 blocks run in full vs extrapolated from {measured_at} "
                  "blocks): "
                  + ", ".join(f"{k} {v:.2%}" for k, v in check["relative_error"].items())]
    parts += ["", "Not traced: " + "; ".join(result["not_traced"]) + "."]
    return "\n".join(parts) + "\n"
