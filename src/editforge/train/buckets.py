"""Aspect buckets and the batch order.

Every target is resized to about `max_pixels` at its own aspect ratio (sides multiples of 32), and each
control likewise, so samples can be batched only with samples of the same latent shapes and the same
number of controls: that tuple of shapes is the bucket. The order of batches is a pure function of
(seed, epoch), and the position in it is two integers, so a resumed run sees exactly the batches the
interrupted run would have seen next.
"""

from __future__ import annotations

import random
from collections import defaultdict


def epoch_batches(buckets: list[tuple], batch_size: int, repeats: int, seed: int, epoch: int) -> list[list[int]]:
    """Sample indices grouped into batches of one bucket each, in a shuffled order for `epoch`.

    A bucket's last batch may be smaller than `batch_size`; dropping it would never train a bucket with
    fewer samples than a batch.
    """
    rng = random.Random(f"{seed}/{epoch}")
    by_bucket: dict[tuple, list[int]] = defaultdict(list)
    for index, bucket in enumerate(buckets):
        by_bucket[bucket].extend([index] * repeats)
    batches = []
    for bucket in sorted(by_bucket):
        indices = by_bucket[bucket]
        rng.shuffle(indices)
        batches += [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    rng.shuffle(batches)
    return batches


class BatchStream:
    """An endless stream of batches; each rank takes every `world_size`-th batch of the global order."""

    def __init__(self, buckets: list[tuple], *, batch_size: int, repeats: int, seed: int, rank: int = 0,
                 world_size: int = 1):
        if not buckets:
            raise ValueError("no samples to train on")
        self.buckets, self.batch_size, self.repeats, self.seed = buckets, batch_size, repeats, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.round = 0, 0  # the position: batches of `epoch` consumed, in rounds of world_size
        self._order: tuple[int, list[list[int]]] | None = None

    def _epoch(self) -> list[list[int]]:
        if self._order is None or self._order[0] != self.epoch:
            batches = epoch_batches(self.buckets, self.batch_size, self.repeats, self.seed, self.epoch)
            # Every rank must take the same number of steps, so the last round wraps around to the start.
            batches += [batches[i % len(batches)] for i in range(-len(batches) % self.world_size)]
            self._order = (self.epoch, batches)
        return self._order[1]

    def __next__(self) -> list[int]:
        batches = self._epoch()
        if self.round * self.world_size >= len(batches):
            self.epoch, self.round = self.epoch + 1, 0
            batches = self._epoch()
        batch = batches[self.round * self.world_size + self.rank]
        self.round += 1
        return batch

    def __iter__(self):
        return self

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "round": self.round}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.round = state["epoch"], state["round"]
