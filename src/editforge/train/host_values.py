"""A step's loss and gradient norm, brought to the host without stalling the GPU.

Reading a GPU scalar with `.item()` makes the host wait until the GPU has run everything queued so far, and
then the GPU idles while the host prepares the next step (reads the next batch, draws noise). So the trainer
never reads a step's values while it runs: `send` starts a non-blocking copy into pinned host memory right
after the step is queued and marks the stream with an event; `receive` returns the oldest step's values,
waiting for that step's event only, while the step queued after it keeps the GPU busy. On a CPU there is
nothing to overlap: the values are read at once.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class StepValues:
    step: int
    loss: float
    grad_norm: float  # nan when the step did not clip (DeepSpeed clips inside its engine)
    lr: float

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss)


class HostValues:
    def __init__(self):
        self._pending: deque = deque()

    def __len__(self) -> int:
        return len(self._pending)

    def send(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor | None, lr: float) -> None:
        values = torch.stack([loss.detach().float().reshape(()),
                              (grad_norm.detach().float().reshape(()) if isinstance(grad_norm, torch.Tensor)
                               else torch.tensor(math.nan if grad_norm is None else float(grad_norm),
                                                 device=loss.device))])
        event = None
        if _overlaps(values.device):
            values = _pinned_copy(values)
            event = torch.cuda.Event()
            event.record()
        self._pending.append((step, values, event, lr))

    def receive(self) -> StepValues:
        """The oldest step sent: waits for that step only."""
        step, values, event, lr = self._pending.popleft()
        if event is not None:
            event.synchronize()
        loss, grad_norm = values.tolist()
        return StepValues(step, loss, grad_norm, lr)

    def drain(self) -> list[StepValues]:
        """Every step sent, oldest first (before a checkpoint, and at the end)."""
        return [self.receive() for _ in range(len(self._pending))]


def _overlaps(device: torch.device) -> bool:
    return device.type == "cuda"


def _pinned_copy(values: torch.Tensor) -> torch.Tensor:
    """A non-blocking copy into page-locked host memory (a copy to pageable memory would block)."""
    host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
    host.copy_(values, non_blocking=True)
    return host
