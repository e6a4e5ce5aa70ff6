"""Training steps of the 60-block transformer from steps of 2 and 3 blocks: exact, because they are affine.

A training step on the fake GPU costs the same Python work per operation as a real one (tens of thousands
of operations through four dispatch layers: about two minutes for 60 blocks at 1024x1024). The blocks of
the Qwen-Image transformer are identical, so every quantity of a step is affine in their number N:
FLOPs, weights, gradients and optimizer states add the same amount per block; with gradient checkpointing
each block keeps its input until the backward pass reaches it, so the backward pass's peak holds every
block's input plus one block's recomputed activations, again affine in N; the forward pass's peak is one
block's work and stays put. Which of them is the step's peak changes with N (small images: the forward
pass at 2 blocks, the backward pass at 60), so each phase is measured and extrapolated on its own, and the
step's peak is the largest at N. Two measurements fix each line: at 2 blocks and at 3 (both have the
distinct last block, whose text output the model drops, so their difference is one ordinary block).

`editforge bench plan` checks this on the real architecture: one configuration is also run at full
depth and both are reported; the tests check it on a small architecture against a run at depth 6.
"""

from __future__ import annotations

from dataclasses import replace

from editforge.plan.stages import Row

SHORT_DEPTHS = (2, 3)
COUNTED = ("flops", "host_syncs")
MEMORY = ("peak_bytes", "weights", "activations", "gradients", "optimizer")


def _line(low: int, high: int, low_depth: int, high_depth: int, depth: int) -> int:
    per_block, rest = divmod((high - low) * (depth - low_depth), high_depth - low_depth)
    return low + per_block + (rest * 2 >= high_depth - low_depth)  # integers, rounded


def extrapolate(shallow: Row, deeper: Row, depth: int) -> Row:
    """The row at `depth` blocks from rows measured at two depths (the deeper second).

    Each phase's peak (forward, backward, optimizer) is extrapolated on its own and the step's peak is the
    largest at `depth`: which phase peaks can change with the depth (the backward pass holds one input per
    block, the forward pass only one block's work), and each phase on its own is affine."""
    if deeper.depth <= shallow.depth:
        raise ValueError("measure at two different depths, the deeper second")

    def at(low: int, high: int) -> int:
        return _line(low, high, shallow.depth, deeper.depth, depth)

    values = {name: at(getattr(shallow, name), getattr(deeper, name)) for name in COUNTED}
    phases = {phase: {name: at(shallow.phases[phase][name], deeper.phases[phase][name]) for name in MEMORY}
              for phase in deeper.phases}
    peak = max(phases.values(), key=lambda parts: parts["peak_bytes"])
    notes = [*deeper.notes, f"measured at {shallow.depth} and {deeper.depth} blocks, extrapolated to {depth} "
             "(see editforge.plan.depth)"]
    return replace(deeper, depth=depth, notes=notes, phases=phases, **values, **peak)
