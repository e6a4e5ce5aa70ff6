"""Peak memory by kind (weights, activations, gradients, optimizer states), per stage, from torch's MemTracker.

`torch.distributed._tools.mem_tracker.MemTracker` follows every tensor's storage, fake or real, and files it
under the parameter, buffer, gradient, optimizer state, activation or temporary it is. It works on fake
tensors (what it was made for) and on real ones, which is how the tests check it against a real run.
EditForge adds:

- **peaks per stage and phase.** `with tracker.stage("denoise_step"):` makes the peak of that stretch a
  `Peak` of its own, besides the whole run's; a training step's is also kept per phase (forward, backward,
  optimizer), which `editforge.plan.depth` extrapolates one by one.
- **speed.** torch's version updates the peak of every live submodule after every op: quadratic in the model
  size, minutes per step for the 60-block transformer. Only the device's and the stages' peaks are kept.
- **frozen weights.** MemTracker puts gradient hooks on every parameter of a tracked module, and torch
  refuses a hook on a tensor that takes no gradient: every frozen weight under a LoRA. Such a parameter
  never gets a gradient, so its hook is skipped.
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
# weights; the backward pass's temporaries as activations.
_KINDS = {"Parameter": "weights", "Buffer": "weights", "Gradient": "gradients", "Optstate": "optimizer",
          "Activation": "activations", "Temp": "activations", "Other": "activations"}
WHOLE = "(whole)"


@dataclass
class Peak:
    total: int = 0
    weights: int = 0
    activations: int = 0
    gradients: int = 0
    optimizer: int = 0

    @classmethod
    def of(cls, snapshot: dict[str, int]) -> "Peak":
        peak = cls(total=snapshot.get("Total", 0))
        for kind, nbytes in snapshot.items():
            if kind != "Total":
                part = _KINDS[kind]
                setattr(peak, part, getattr(peak, part) + nbytes)
        return peak

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


def _tracker_class():
    from torch.distributed._tools.mem_tracker import MemTracker

    class StagePeaks(MemTracker):
        def __init__(self, device: torch.device):
            super().__init__()
            self.device = device
            self.label = WHOLE
            self.snapshots: dict[str, dict[str, int]] = {}

        # Per-module snapshots are not kept (only the device's and the stages' peaks are), which also lets a
        # module run more than once per tracked stretch: a pipeline calls its transformer once per step.
        def _pre_fw_hook(self, module, inputs) -> None:
            if module in self.memory_tracking and not self._mod_tracker.is_bw:
                return  # called again: its weights are tracked already
            super()._pre_fw_hook(module, inputs)

        def _post_fw_hook(self, module, inputs, outputs) -> None:
            if self._mod_tracker.is_bw and self._ac_mod is not None and self._ac_mod() is module:
                self._ac_mod, self._in_ac = None, False  # the recomputed forward of a checkpoint ended

        def _pre_bw_hook(self, module, args) -> None:
            pass

        def _post_bw_hook(self, module, args) -> None:
            pass

        def _update_peak_stats(self, peak_state) -> None:
            snap = self._curr_mem_snap.get(self.device)
            if snap is None:
                return
            phase = "optimizer" if self._in_opt else "backward" if self._mod_tracker.is_bw else "forward"
            for label in {WHOLE, self.label, f"{self.label}:{phase}"}:
                if self.snapshots.get(label, {}).get("Total", -1) < snap["Total"]:
                    self.snapshots[label] = dict(snap)

    return StagePeaks


class MemoryTracker:
    """`with MemoryTracker(models..., optimizer, device=gpu.device) as memory:` ... `memory.peak("denoise_step")`.

    Pass the models (and the optimizer) that are in memory: their tensors count as weights and optimizer
    states, whether they were made before the block or not.
    """

    def __init__(self, *modules_and_optimizers, device: torch.device | str):
        self._tracker = _tracker_class()(torch.device(device))
        self._tracked = modules_and_optimizers
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> "MemoryTracker":
        stack = contextlib.ExitStack()
        stack.enter_context(_SkipFrozenGradHooks())
        self._tracker.track_external(*self._tracked)
        stack.enter_context(self._tracker)
        self._stack = stack
        return self

    def __exit__(self, *exc) -> None:
        assert self._stack is not None
        self._stack.close()

    @contextlib.contextmanager
    def stage(self, label: str) -> Iterator[None]:
        outer, self._tracker.label = self._tracker.label, label
        try:
            # the stage starts from what is already there (weights, the latents of earlier stages)
            current = self._tracker._curr_mem_snap.get(self._tracker.device)
            if current is not None and label not in self._tracker.snapshots:
                self._tracker.snapshots[label] = dict(current)
            yield
        finally:
            self._tracker.label = outer

    def peak(self, label: str = WHOLE, phase: str | None = None) -> Peak:
        """The peak of `label` (a stage, or the whole tracked stretch), or of one `phase` of it: "forward",
        "backward" (gradient checkpointing's recomputation included) or "optimizer"."""
        return Peak.of(self._tracker.snapshots.get(label if phase is None else f"{label}:{phase}", {}))
