"""Which configurations fit which GPU: the plan's measured peaks plus what a real GPU adds.

Generation, per transformer precision (bf16, fp8, int8) and offload mode:
    none        every component on the GPU: the measured peak of the stage that peaks
    model       diffusers' model offload, one component on the GPU at a time: per stage, that component's
                weights (measured) plus the stage's activations (measured); the worst stage
    sequential  diffusers' sequential offload, one layer's weights at a time: per stage, the largest single
                layer of its component plus the stage's activations (a lower bound: the hooks' own
                buffers are not modelled)
Training: the measured peak of one optimizer step.

A real GPU also holds the CUDA context and the caching allocator's slack, which fake tensors do not see.
They are assumptions, stated with every table: `CUDA_CONTEXT` bytes, and `ALLOCATOR_SLACK` of the peak.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

GiB = 2**30
# The CUDA context and cuBLAS/cuDNN workspaces a torch process holds before any tensor (typical for torch 2.x
# on Hopper/Ada; 0.5-0.9 GiB is what nvidia-smi shows for an idle process).
CUDA_CONTEXT = int(0.8 * GiB)
# Fragmentation of torch's caching allocator at the peak (expandable segments keep it near this).
ALLOCATOR_SLACK = 0.05
# What the cards' drivers report as total memory (nvidia-smi), in bytes.
CARDS = {
    "24 GB (RTX 3090/4090, A10)": 24564 * 2**20,
    "40 GB (A100 40GB)": 40960 * 2**20,
    "48 GB (RTX 6000 Ada, A6000, L40S)": 49140 * 2**20,
    "80 GB (A100/H100 80GB)": 81559 * 2**20,
}
STAGE_COMPONENT = {"text_encode": "text_encoder", "vae_encode": "vae", "denoise_step": "transformer",
                   "vae_decode": "vae"}
OFFLOAD = ("none", "model", "sequential")


@dataclass(frozen=True)
class Fit:
    what: str                 # generation | training
    model: str
    config: str               # e.g. "fp8, model offload" or "int8 base, 1024², 1 control, batch 1"
    peak_bytes: int           # the plan's, before context and slack
    needs_bytes: int          # with them
    fits: dict[str, bool]     # card -> fits
    dtype: str = ""           # the transformer's (generation) or the base's (training) precision
    offload: str = "none"     # generation: none | model | sequential
    references: int = 0
    blocks_swapped: int = 0   # training: train.blocks_to_swap

    def as_dict(self) -> dict:
        return asdict(self)


def needs(peak: int) -> int:
    return int(peak * (1 + ALLOCATOR_SLACK)) + CUDA_CONTEXT


def _fit(what: str, model: str, config: str, peak: int, **key) -> Fit:
    need = needs(peak)
    return Fit(what, model, config, peak, need, {card: need <= total for card, total in CARDS.items()}, **key)


def generation_fits(rows: list[dict], components: dict[str, dict[str, int]]) -> list[Fit]:
    """`components[name]` = {"bytes": weights, "largest_layer": bytes} per component and transformer precision
    (keys `text_encoder`, `vae`, `transformer:bf16`, `transformer:fp8`, ...)."""
    fits = []
    by_config: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        if row["stage"] in STAGE_COMPONENT:
            by_config.setdefault((row["model"], row["references"]), {}).setdefault(row["dtype"], {})[row["stage"]] = row
    for (model, references), by_dtype in sorted(by_config.items()):
        bf16 = by_dtype.get("bf16", {})
        for dtype, stages in sorted(by_dtype.items()):
            stages = {**bf16, **stages}  # text encoder and VAE stages do not depend on the transformer's dtype
            if set(stages) != {s for s in STAGE_COMPONENT if s in bf16}:
                continue

            def weights(stage: str, key: str = "bytes") -> int:
                name = STAGE_COMPONENT[stage]
                return components[f"{name}:{dtype}" if name == "transformer" else name][key]

            resident = sum(weights(s) for s in ("text_encode", "denoise_step", "vae_decode"))
            per_mode = {
                "none": max(resident + row["activations"] for row in stages.values()),
                "model": max(weights(s) + row["activations"] for s, row in stages.items()),
                "sequential": max(weights(s, "largest_layer") + row["activations"] for s, row in stages.items()),
            }
            refs = f"{references} reference{'s' if references != 1 else ''}" if references else "text-to-image"
            for mode in OFFLOAD:
                label = f"{dtype}, {'no' if mode == 'none' else mode} offload, {refs}"
                fits.append(_fit("generation", model, label, per_mode[mode], dtype=dtype, offload=mode,
                                 references=references))
    return fits


def training_fits(rows: list[dict]) -> list[Fit]:
    return [_fit("training", row["model"], training_label(row), row["peak_bytes"], dtype=row["dtype"],
                 references=row["references"], blocks_swapped=row["blocks_swapped"])
            for row in rows if row["stage"] == "train_step"]


def training_label(row: dict) -> str:
    swapped = f", {row['blocks_swapped']} blocks swapped" if row["blocks_swapped"] else ""
    return (f"{row['dtype']} base, {row['size']}², {row['references']} control{'s' if row['references'] != 1 else ''}, "
            f"batch {row['batch']}{swapped}")


def memory_table(result: dict) -> dict:
    """What `editforge.models.memory` checks before loading: per model and transformer precision/offload, the
    bytes the most demanding measured reference count needs (context and slack included); per training
    configuration ("base/size/controls/batch"), the bytes of one optimizer step without swapped blocks and, in
    `training_swapped`, its lines in the number of swapped blocks; and the transformer shape measured."""
    from editforge.benchmark.architectures import FULL_TRANSFORMER

    table: dict[str, dict[str, int]] = {}
    for f in generation_fits(result["rows"], result["components"]):
        key = f"{f.dtype}/{f.offload}"
        table.setdefault(f.model, {})[key] = max(table.get(f.model, {}).get(key, 0), f.needs_bytes)
    shape = {k: FULL_TRANSFORMER[k] for k in ("num_layers", "num_attention_heads", "attention_head_dim")}
    steps = [row for row in result["rows"] if row["stage"] == "train_step"]
    key = lambda row: f"{row['dtype']}/{row['size']}/{row['references']}/{row['batch']}"  # noqa: E731
    training = {key(row): needs(row["peak_bytes"]) for row in steps if not row["blocks_swapped"]}
    return {"measured_for": shape, "cuda_context_bytes": CUDA_CONTEXT, "allocator_slack": ALLOCATOR_SLACK,
            "generation": table, "training": training, "training_swapped": _swap_lines(steps, key)}


def _swap_lines(steps: list[dict], key) -> dict[str, dict]:
    """Per training configuration, its swapped rows as lines in the number of swapped blocks (affine from
    `MIN_SWAPPED` up, editforge.plan.depth): the GPU bytes needed and the pinned CPU bytes, each as
    [value at MIN_SWAPPED blocks, change per block]."""
    from editforge.plan.depth import MIN_SWAPPED

    by_config: dict[str, list[dict]] = {}
    for row in steps:
        if row["blocks_swapped"]:
            by_config.setdefault(key(row), []).append(row)
    lines = {}
    for config, rows in by_config.items():
        rows = sorted(rows, key=lambda row: row["blocks_swapped"])
        low, high = rows[0], rows[-1]
        span = high["blocks_swapped"] - low["blocks_swapped"]

        def line(value) -> list[int]:
            per_block = (value(high) - value(low)) / span
            for row in rows[1:-1]:  # each row's peak is its largest phase: a line only while one phase peaks
                if abs(value(low) + per_block * (row["blocks_swapped"] - low["blocks_swapped"]) - value(row)) > span:
                    raise ValueError(f"training {config}: the swapped rows are not on one line")
            return [round(value(low) + per_block * (MIN_SWAPPED - low["blocks_swapped"])), round(per_block)]

        lines[config] = {"from": MIN_SWAPPED, "needs": line(lambda row: needs(row["peak_bytes"])),
                         "pinned": line(lambda row: row["pinned_bytes"])}
    return lines


def component_sizes(module) -> dict[str, int]:
    """Bytes of a model's weights (parameters and buffers, quantized ones by their storage) and of its largest
    single layer (what sequential offload holds at once)."""
    from torch.distributed._tools.common_utils import get_untyped_storages

    def nbytes(tensors) -> int:
        return sum(s.nbytes() for s in {st for t in tensors for st in get_untyped_storages(t)})

    total = nbytes([*module.parameters(), *module.buffers()])
    largest = max(nbytes([*m.parameters(recurse=False), *m.buffers(recurse=False)]) for m in module.modules())
    return {"bytes": total, "largest_layer": largest}
