"""Will a full-size model fit this GPU? Checked before any weight loads, from what `editforge bench plan`
measured on the published architectures (docs/benchmarks.md, "Fit").

`memory_needs.json` beside this module is `editforge bench plan --needs FILE`'s output: per family, and per
transformer precision and offload mode, the GPU bytes a generation needs at the most demanding measured
reference count, CUDA context and allocator slack included. A run whose configuration needs more than the card
has is refused with one line naming what would fit, instead of an out-of-memory error minutes into loading.
Only checkpoints of the measured shape are checked (the tiny models and other shapes are not), only in bf16
(fp32 weights on a GPU are a choice this table does not cover), and not with a single-file transformer or
`blocks_to_swap` (configurations the plan has not measured).
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
# rank 32, gradient checkpointing, no swapped blocks; sides 512 and 1024, 1-2 controls, batch 1-2.
TRAINING_FAMILIES = ("qwen-image-edit-2509", "qwen-image-edit-2511")
TRAINING_RANK = 32


def training_memory_line(family: Family, transformer_config: dict, *, base: str | None, pixels: int, controls: int,
                         batch: int, rank: int, checkpointing: bool, blocks_to_swap: int, card_bytes: int) -> str:
    """One line for `editforge train` to print before anything loads: the measured need of the run's
    configuration (the smallest measured row that covers it) against the card, and what fits if it does not."""
    table = measured().get("training", {})
    side = next((s for s in (512, 1024) if s * s >= pixels), None)
    covered = (family.name in TRAINING_FAMILIES and checkpointing and not blocks_to_swap and rank <= TRAINING_RANK
               and side and controls <= 2 and batch <= 2 and table and measured_shape(transformer_config))
    card = f"this GPU has {card_bytes / GiB:.1f} GiB"
    if not covered:
        return (f"memory: no measured row covers this run (measured: {', '.join(TRAINING_FAMILIES)}, rank <= 32, "
                f"gradient checkpointing, no swapped blocks, up to 1024², 2 controls, batch 2); {card}")
    key = lambda dtype: f"{dtype}/{side}/{max(controls, 1)}/{batch}"  # noqa: E731
    need = table[key(base or "bf16")]
    what = f"{base or 'bf16'} base, {side}², {max(controls, 1)} control(s), batch {batch}"
    line = f"memory: about {need / GiB:.1f} GiB on the GPU (measured by `editforge bench plan`: {what}); {card}"
    if need <= card_bytes:
        return line
    fitting = [dtype for dtype in ("fp8", "int8") if table[key(dtype)] <= card_bytes and dtype != base]
    offer = ", ".join(f"`train.quantize: {d}` ({table[key(d)] / GiB:.1f} GiB)" for d in fitting)
    return line + (f" and would run out. What fits: {offer}" if fitting else
                   " and would run out; no measured base fits: try `train.blocks_to_swap` (not measured yet)")


def _describe(key: str) -> str:
    dtype, offload = key.split("/")
    return f"a {dtype} transformer and {'no' if offload == 'none' else offload} offload"


def _as_options(key: str) -> str:
    dtype, offload = key.split("/")
    parts = ([f"`quantize={dtype}`"] if dtype != "bf16" else []) + ([f"`offload={offload}`"] if offload != "none" else [])
    return " with ".join(parts) or "no quantization or offload"
