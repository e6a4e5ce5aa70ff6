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


def needs(family: Family, transformer_config: dict, quantize: str | None, offload: str | None) -> dict[str, int] | None:
    """Bytes per configuration ("fp8/model": ...) of `family` at the measured shape, or None when the checkpoint
    is not of that shape or its family (or one with the same pipeline) was not measured."""
    table = measured()
    if any(transformer_config.get(k) != v for k, v in table["measured_for"].items()):
        return None
    by_family = table["generation"]
    name = family.name if family.name in by_family else next(
        (n for n in by_family if FAMILIES[n].pipeline_class == family.pipeline_class), None)
    return by_family.get(name)


def check_fits(family: Family, transformer_config: dict, quantize: str | None, offload: str | None,
               card_bytes: int) -> None:
    """Refuse, in one line, a generation configuration the card cannot hold."""
    table = needs(family, transformer_config, quantize, offload)
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


def _describe(key: str) -> str:
    dtype, offload = key.split("/")
    return f"a {dtype} transformer and {'no' if offload == 'none' else offload} offload"


def _as_options(key: str) -> str:
    dtype, offload = key.split("/")
    parts = ([f"`quantize={dtype}`"] if dtype != "bf16" else []) + ([f"`offload={offload}`"] if offload != "none" else [])
    return " with ".join(parts) or "no quantization or offload"
