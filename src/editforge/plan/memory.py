"""Peak memory by kind (weights, activations, gradients, optimizer states) from torch's MemTracker.

`torch.distributed._tools.mem_tracker.MemTracker` follows every tensor's storage, fake or real, and
files it under the parameter, buffer, gradient, optimizer state, activation or temporary it is; its
"peak" snapshot is the moment the device held the most, split by kind. It works on fake tensors (that
is what it was made for) and on real ones, which is how the tests check it against a real run.

One fix: MemTracker puts gradient hooks on every parameter of a tracked module, and torch refuses a
hook on a tensor that takes no gradient, i.e. on every frozen weight under a LoRA. Such a parameter
never gets a gradient, so its hook is skipped (`_SkipFrozenGradHooks`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch.overrides import TorchFunctionMode
from torch.utils.hooks import RemovableHandle

PARTS = ("weights", "activations", "gradients", "optimizer")
# MemTracker's kinds -> the parts a user sizes a GPU by. Buffers (rope tables, norms' stats) count as
# weights; temporaries of the backward pass as activations.
_KINDS = {"Parameter": "weights", "Buffer": "weights", "Gradient": "gradients", "Optstate": "optimizer",
          "Activation": "activations", "Temp": "activations", "Other": "activations"}


@dataclass
class Peak:
    total: int = 0
    weights: int = 0
    activations: int = 0
    gradients: int = 0
    optimizer: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"peak_bytes": self.total, **{part: getattr(self, part) for part in PARTS}}


class _Hooks(dict):
    """A dict that can be weakly referenced, as RemovableHandle requires."""


_NO_HOOKS = _Hooks()


class _SkipFrozenGradHooks(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        hooks = (torch.Tensor.register_hook, torch.Tensor.register_post_accumulate_grad_hook)
        if func in hooks and not args[0].requires_grad:
            return RemovableHandle(_NO_HOOKS)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def track_memory(*modules_and_optimizers, device: str | torch.device = "cuda") -> Iterator[Peak]:
    """Track the peak of everything allocated inside the block; `Peak` is filled when it ends.

    Pass the models (and optimizer) already in memory: MemTracker attributes their tensors to them.
    """
    from torch.distributed._tools.mem_tracker import MemTracker

    class _WholeDevicePeak(MemTracker):
        """Only the device's peak: torch's version also updates the peak of every live submodule after
        every op, which is quadratic in the model size (minutes per step for the 60-block transformer)."""

        def _update_peak_stats(self, peak_state) -> None:
            for device_, snap in self._curr_mem_snap.items():
                if self._peak_mem.get(device_, 0) < snap["Total"]:
                    self._peak_mem[device_] = snap["Total"]
                    self._peak_mem_snap[device_] = dict(snap)

    peak = Peak()
    tracker = _WholeDevicePeak()
    with _SkipFrozenGradHooks():
        tracker.track_external(*modules_and_optimizers)
        with tracker:
            yield peak
    snapshot = tracker.get_tracker_snapshot("peak").get(torch.device(device), {})
    for kind, nbytes in snapshot.items():
        if kind == "Total":
            peak.total = nbytes
        else:
            part = _KINDS[kind]
            setattr(peak, part, getattr(peak, part) + nbytes)
