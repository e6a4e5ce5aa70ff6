"""Training steps of the 60-block transformer from steps of 2 and 3 blocks: exact, because they are affine.

A training step on the fake GPU costs the same Python work per operation as a real one (tens of thousands
of operations through four dispatch layers: about two minutes for 60 blocks at 1024x1024). The blocks of
the Qwen-Image transformer are identical, so every quantity of a step is affine in their number N:
FLOPs, weights, gradients and optimizer states add the same amount per block; with gradient checkpointing
each block keeps its input until the backward pass reaches it, and the peak (the backward pass's start)
holds every block's input plus one block's recomputed activations, again affine in N. Two measurements
fix the line: at 2 blocks and at 3 (both have the distinct last block, whose text output the model
drops, so their difference is one ordinary block).

`editforge bench plan` checks this on the real architecture: one configuration is also run at full
depth and both are reported; the tests check it on a small architecture against a run at depth 6.
"""

from __future__ import annotations

from dataclasses import replace

from editforge.plan.stages import Row

SHORT_DEPTHS = (2, 3)
AFFINE_FIELDS = ("flops", "peak_bytes", "weights", "activations", "gradients", "optimizer", "host_syncs")


def extrapolate(shallow: Row, deeper: Row, depth: int) -> Row:
    """The row at `depth` blocks on the line through `shallow` and `deeper` (measured at two depths)."""
    span = deeper.depth - shallow.depth
    if span <= 0:
        raise ValueError("measure at two different depths, the deeper second")
    values = {}
    for name in AFFINE_FIELDS:
        low, high = getattr(shallow, name), getattr(deeper, name)
        per_block, rest = divmod((high - low) * (depth - shallow.depth), span)
        values[name] = low + per_block + (rest * 2 >= span)  # integer bytes and FLOPs, rounded
    notes = [*deeper.notes, f"measured at {shallow.depth} and {deeper.depth} blocks, extrapolated to {depth} "
             "(see editforge.plan.depth)"]
    return replace(deeper, depth=depth, notes=notes, **values)
