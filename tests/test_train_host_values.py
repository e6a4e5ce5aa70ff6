"""A training step's loss and gradient norm reach the host one step late, without stalling a GPU."""

from __future__ import annotations

import math

import torch

from editforge.train import host_values
from editforge.train.host_values import HostValues


def test_values_come_back_in_order_with_their_step_and_lr():
    values = HostValues()
    values.send(1, torch.tensor(0.5), torch.tensor(2.0), lr=1e-4)
    values.send(2, torch.tensor([0.25]), None, lr=2e-4)
    first = values.receive()
    assert (first.step, first.loss, first.grad_norm, first.lr, first.finite) == (1, 0.5, 2.0, 1e-4, True)
    [second] = values.drain()
    assert second.step == 2 and second.loss == 0.25 and math.isnan(second.grad_norm) and len(values) == 0
    values.send(3, torch.tensor(float("nan")), None, lr=0.0)
    assert not values.receive().finite


def test_on_a_gpu_a_step_waits_only_for_its_own_event(monkeypatch):
    """The GPU branch, forced: each send makes a non-blocking pinned copy and records an event; each receive
    waits for that event only (not for the whole stream, as .item() would)."""
    log = []

    class Event:
        def record(self):
            log.append(("record", self))

        def synchronize(self):
            log.append(("wait", self))

    monkeypatch.setattr(host_values, "_overlaps", lambda device: True)
    monkeypatch.setattr(host_values, "_pinned_copy", lambda values: log.append("copy") or values.clone())
    monkeypatch.setattr(torch.cuda, "Event", Event)
    values = HostValues()
    values.send(1, torch.tensor(1.0), torch.tensor(3.0), lr=0.1)
    values.send(2, torch.tensor(2.0), torch.tensor(4.0), lr=0.1)
    assert [e if isinstance(e, str) else e[0] for e in log] == ["copy", "record", "copy", "record"]
    assert values.receive().loss == 1.0
    assert log[-1] == ("wait", log[1][1])  # the first step's event, not the second's
