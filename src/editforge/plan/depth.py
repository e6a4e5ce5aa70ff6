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

Block swap (`train.blocks_to_swap`) adds a second axis: with S of the N blocks swapped, a step is affine in N
and in S as long as at least 3 blocks are swapped and at least one is not (fewer swapped blocks leave fewer
device copies in flight; none unswapped moves the backward pass's peak). Three measurements fix the plane:
(4 blocks, 3 swapped), (5, 3) and (5, 4); a test checks them against a run at (8, 5) (and they also predicted
(8, 3) and (12, 7) exactly when this was built), and `editforge bench plan` against a full 60-block run with 16
swapped.

`editforge bench plan` checks this on the real architecture: one configuration is also run at full
depth and both are reported; the tests check it on a small architecture against a run at depth 7.

Not so for a quantized (int8, fp8) base without swapped blocks: there the backward pass has a second peak, late
and of constant size (all LoRA gradients present), which is the larger one at 2 and 3 blocks but not at 60,
where the saved block inputs outweigh it; extrapolating the shallow peak overestimated the full-depth one by
10% (int8) and 22% (fp8) at 1024². `editforge bench plan` measures those rows at full depth instead (a minute
each). Swapped steps keep their early peak at every measured depth and extrapolate exactly (checked at full
depth for every base).
"""

from __future__ import annotations

from dataclasses import replace

from editforge.plan.stages import Row

SHORT_DEPTHS = (2, 3)
SWAP_POINTS = ((4, 3), (5, 3), (5, 4))  # (depth, swapped): the plane of swapped steps, see above
MIN_SWAPPED = 3
COUNTED = ("flops", "host_syncs", "pinned_bytes", "copied_bytes")
MEMORY = ("peak_bytes", "weights", "activations", "gradients", "optimizer")


def _step(low: int, high: int, steps: int, span: int) -> int:
    """(high - low) * steps / span, rounded to an integer (exact when span is 1, as every span here is)."""
    per_block, rest = divmod((high - low) * steps, span)
    return per_block + (rest * 2 >= span)


def extrapolate(shallow: Row, deeper: Row, depth: int, *, more_swapped: Row | None = None, swapped: int = 0) -> Row:
    """The row at `depth` blocks (`swapped` of them swapped) from rows measured at two depths (the deeper second)
    and, for a swapped step, a third at `deeper`'s depth with more blocks swapped.

    Each phase's peak (forward, backward, optimizer) is extrapolated on its own and the step's peak is the
    largest at `depth`: which phase peaks can change with the depth (the backward pass holds one input per
    block, the forward pass only one block's work), and each phase on its own is affine."""
    if deeper.depth <= shallow.depth or deeper.blocks_swapped != shallow.blocks_swapped:
        raise ValueError("measure at two different depths with the same blocks swapped, the deeper second")
    if more_swapped and (more_swapped.depth != deeper.depth or more_swapped.blocks_swapped <= deeper.blocks_swapped):
        raise ValueError("measure more swapped blocks at the deeper depth")
    if (swapped or deeper.blocks_swapped) and not (more_swapped and MIN_SWAPPED <= swapped < depth):
        raise ValueError(f"a swapped step is extrapolated from three rows, to {MIN_SWAPPED} or more swapped blocks "
                         "of which at least one is not")

    def at(name: str, phase: str | None = None) -> int:
        value = (lambda row: row.phases[phase][name]) if phase else (lambda row: getattr(row, name))
        result = value(deeper) + _step(value(shallow), value(deeper), depth - deeper.depth,
                                       deeper.depth - shallow.depth)
        if more_swapped:
            result += _step(value(deeper), value(more_swapped), swapped - deeper.blocks_swapped,
                            more_swapped.blocks_swapped - deeper.blocks_swapped)
        return result

    values = {name: at(name) for name in COUNTED}
    phases = {phase: {name: at(name, phase) for name in MEMORY} for phase in deeper.phases}
    peak = max(phases.values(), key=lambda parts: parts["peak_bytes"])
    measured = [f"{row.depth}" + (f" ({row.blocks_swapped} swapped)" if row.blocks_swapped else "")
                for row in (shallow, deeper, more_swapped) if row]
    notes = [*deeper.notes, f"measured at {', '.join(measured)} blocks, extrapolated to {depth}"
             + (f" ({swapped} swapped)" if swapped else "") + " (see editforge.plan.depth)"]
    return replace(deeper, depth=depth, blocks_swapped=swapped, notes=notes, phases=phases, **values, **peak)
