"""Will a full-size model fit this GPU? Checked before any weight loads, from what `editforge bench plan`
measured on the published architectures (docs/benchmarks.md, "Fit").

`memory_needs.json` beside this module is `editforge bench plan --needs FILE`'s output: per family, and per
transformer precision and offload mode, the GPU bytes a generation needs at the most demanding measured
reference count, CUDA context and allocator slack included. A run whose configuration needs more than the card
has is refused with one line naming what would fit, instead of an out-of-memory error minutes into loading.
Only checkpoints of the measured shape are checked (the tiny models and other shapes are not), only in bf16
(fp32 weights on a GPU are a choice this table does not cover), and not with a single-file transformer or
`blocks_to_swap` (configurations the plan has not measured for generation). Training prints its own line
(`training_memory_line`), from the plan's training rows, swapped blocks included.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from editforge.errors import EditForgeError
from editforge.models.registry import FAMILIES, Family

NEEDS_FILE = Path(__file__).with_name("memory_needs.json")
GiB = 2**30
# The order in which options are offered: fastest first (offload costs time per image, int8 a little quality).
PREFERENCE = ("bf16/none", "fp8/none", "int8/none", "bf16/model", "fp8/model", "int8/model",
              "bf16/sequential", "fp8/sequential", "int8/sequential")


@lru_cache(maxsize=1)
def measured() -> dict:
    return json.loads(NEEDS_FILE.read_text())


def measured_shape(transformer_config: dict) -> bool:
    """Whether a transformer has the shape the plan measured (the published one, not a tiny model)."""
    return all(transformer_config.get(k) == v for k, v in measured()["measured_for"].items())


def needs(family: Family, transformer_config: dict) -> dict[str, int] | None:
    """Bytes per configuration ("fp8/model": ...) of `family` at the measured shape, or None when the checkpoint
    is not of that shape or its family (or one with the same pipeline) was not measured."""
    if not measured_shape(transformer_config):
        return None
    by_family = measured()["generation"]
    name = family.name if family.name in by_family else next(
        (n for n in by_family if FAMILIES[n].pipeline_class == family.pipeline_class), None)
    return by_family.get(name)


def check_fits(family: Family, transformer_config: dict, quantize: str | None, offload: str | None,
               card_bytes: int) -> None:
    """Refuse, in one line, a generation configuration the card cannot hold."""
    table = needs(family, transformer_config)
    if table is None:
        return
    chosen = f"{quantize or 'bf16'}/{offload or 'none'}"
    need = table.get(chosen)
    if need is None or need <= card_bytes:
        return
    fitting = [key for key in PREFERENCE if table.get(key, card_bytes + 1) <= card_bytes]
    offer = ", ".join(f"{_as_options(key)} ({table[key] / GiB:.1f} GiB)" for key in fitting[:3])
    raise EditForgeError(
        f"{family.name} with {_describe(chosen)} needs about {need / GiB:.1f} GiB of GPU memory (measured by "
        f"`editforge bench plan`); this GPU has {card_bytes / GiB:.1f} GiB. "
        + (f"What fits: {offer}" if fitting else "Nothing measured fits this card")
        + "; `skip_memory_check` loads anyway")


# What the training rows were measured with (editforge.plan): Edit-2509's architecture (2511 is the same), LoRA
# rank 32, gradient checkpointing; sides 512 and 1024, 1-2 controls, batch 1-2; no blocks swapped, and each of
# those as a line in the number of swapped blocks (from 3 up: `training_swapped`).
TRAINING_FAMILIES = ("qwen-image-edit-2509", "qwen-image-edit-2511")
TRAINING_RANK = 32
BASES = ("bf16", "fp8", "int8")


def training_memory_line(family: Family, transformer_config: dict, *, base: str | None, pixels: int, controls: int,
                         batch: int, rank: int, checkpointing: bool, blocks_to_swap: int, card_bytes: int) -> str:
    """One line for `editforge train` to print before anything loads: the measured need of the run's
    configuration (the smallest measured row that covers it) against the card, and if it would not fit, what
    would: another base without swapping, else the fewest `blocks_to_swap` (with the pinned CPU memory it takes)."""
    table, swapped = measured().get("training", {}), measured().get("training_swapped", {})
    side = next((s for s in (512, 1024) if s * s >= pixels), None)
    lowest = min((line["from"] for line in swapped.values()), default=None)
    covered = (family.name in TRAINING_FAMILIES and checkpointing and rank <= TRAINING_RANK and side
               and controls <= 2 and batch <= 2 and table and measured_shape(transformer_config)
               and (not blocks_to_swap or (lowest and lowest <= blocks_to_swap < transformer_config["num_layers"])))
    card = f"this GPU has {card_bytes / GiB:.1f} GiB"
    if not covered:
        swaps = f"no blocks swapped or {lowest} and more" if lowest else "no blocks swapped"
        return (f"memory: no measured row covers this run (measured: {', '.join(TRAINING_FAMILIES)}, rank <= 32, "
                f"gradient checkpointing, up to 1024², 2 controls, batch 2, {swaps}); {card}")
    config = lambda dtype: f"{dtype}/{side}/{max(controls, 1)}/{batch}"  # noqa: E731
    base = base or "bf16"
    if blocks_to_swap and config(base) not in swapped:
        return f"memory: no measured row covers {blocks_to_swap} swapped blocks of a {base} base; {card}"
    need = _swapped(swapped[config(base)], "needs", blocks_to_swap) if blocks_to_swap else table[config(base)]
    what = (f"{base} base, {side}², {max(controls, 1)} control(s), batch {batch}"
            + (f", {blocks_to_swap} blocks swapped" if blocks_to_swap else ""))
    line = f"memory: about {need / GiB:.1f} GiB on the GPU (measured by `editforge bench plan`: {what}); {card}"
    if need <= card_bytes:
        return line
    offers = [f"`train.quantize: {dtype}` ({table[config(dtype)] / GiB:.1f} GiB)" for dtype in BASES[1:]
              if dtype != base and table[config(dtype)] <= card_bytes and not blocks_to_swap]
    unswapped_fits = {dtype for dtype in BASES if table[config(dtype)] <= card_bytes}
    for dtype in dict.fromkeys((base, *BASES)):  # the run's own base first
        lines = swapped.get(config(dtype))
        fewest = lines and _fewest_swapped(lines, card_bytes, transformer_config["num_layers"])
        if fewest and (dtype != base or fewest > blocks_to_swap) and dtype not in unswapped_fits and len(offers) < 3:
            offers.append((f"`train.quantize: {dtype}` with " if dtype != base else "")
                          + f"`train.blocks_to_swap: {fewest}` ({_swapped(lines, 'needs', fewest) / GiB:.1f} GiB, "
                          f"{_swapped(lines, 'pinned', fewest) / GiB:.1f} GiB of pinned CPU memory)")
    return line + (f" and would run out. What fits: {', '.join(offers)}" if offers else
                   " and would run out; nothing measured fits this card")


def _swapped(lines: dict, what: str, blocks: int) -> int:
    at, per_block = lines[what]
    return at + per_block * (blocks - lines["from"])


def _fewest_swapped(lines: dict, card_bytes: int, layers: int) -> int | None:
    """The fewest swapped blocks whose need fits `card_bytes` (at least one block stays on the GPU)."""
    at, per_block = lines["needs"]
    if at <= card_bytes:
        return lines["from"]
    if per_block >= 0:
        return None
    fewest = lines["from"] + -(-(at - card_bytes) // -per_block)
    return fewest if fewest < layers else None


def _describe(key: str) -> str:
    dtype, offload = key.split("/")
    return f"a {dtype} transformer and {'no' if offload == 'none' else offload} offload"


def _as_options(key: str) -> str:
    dtype, offload = key.split("/")
    parts = ([f"`quantize={dtype}`"] if dtype != "bf16" else []) + ([f"`offload={offload}`"] if offload != "none" else [])
    return " with ".join(parts) or "no quantization or offload"
