"""Counting FLOPs with torch's own formulas, without torch's module tracking.

`torch.utils.flop_counter.FlopCounterMode` also tracks which module each op ran in, with hooks on every
module's outputs that keep those outputs alive until the backward pass reaches them. That defeats gradient
checkpointing: a training step measured under it holds every block's activations (1.6 GiB more per block at
1024x1024). `FlopCount` keeps only the total, from the same formulas (`flop_registry`).
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, register_flop_formula


def _count_quanto_matmuls() -> None:
    """optimum-quanto's int8 linear layers run one custom op, `quanto::qbytes_mm(activations [.., K],
    weights [N, K], scales)`: a matmul torch's counter does not know. Its FLOPs are those of the matmul."""
    try:
        import optimum.quanto  # noqa: F401  (defines the op)
    except ImportError:
        return
    op = torch.ops.quanto.qbytes_mm
    if op in flop_registry:
        return

    @register_flop_formula(op)
    def qbytes_mm_flop(activation_shape, weight_shape, scales_shape, out_shape=None, **kwargs) -> int:
        rows = 1
        for size in activation_shape[:-1]:
            rows *= size
        return 2 * rows * activation_shape[-1] * weight_shape[0]


class FlopCount(TorchDispatchMode):
    """`with FlopCount() as flops: ...` then `flops.total`."""

    def __init__(self):
        super().__init__()
        self.total = 0
        _count_quanto_matmuls()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (torch.is_inference_mode_enabled() and func.namespace == "aten"
                and func._overloadpacket not in flop_registry):
            # Under inference_mode a composite op (aten.linear) arrives whole: count what it decomposes into.
            # Only there: decomposing other ops (a layer norm) would allocate intermediates the real kernel
            # does not, and the memory tracker measuring alongside would see them.
            with self:
                out = func.decompose(*args, **kwargs)
            if out is not NotImplemented:
                return out
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out
