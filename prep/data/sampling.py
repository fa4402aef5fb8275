"""A sampler whose order and per-sample augmentation seeds depend only on (seed, epoch).

A resumed run must replay exactly what an uninterrupted one would have done. Seeding the
shuffle once, or each worker's augmentations once, does not allow that: their random state
runs on from epoch to epoch. This sampler yields ``(index, sample_seed)`` pairs. The order
is a permutation drawn from ``seed + epoch``, and each sample's seed is derived from
``(seed, epoch, index)``; prep's datasets re-seed their transform from it (once per batch,
from its first sample, which is as deterministic and far cheaper). Call
``set_epoch`` before each epoch, as with torch's DistributedSampler.

Under torchrun each rank takes every ``world_size``-th pair of the same order. For
training (``pad``), the order is padded by repeating its start so that every rank has as
many batches as the others, which DDP needs; evaluation shards without padding, so no
image is counted twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch


class SeededSampler(torch.utils.data.Sampler):
    """Yields ``(index, sample_seed)`` (or plain indexes when ``with_seeds`` is false, for
    datasets that do not take seeds); shuffled per epoch when ``shuffle``."""

    def __init__(
        self, length: int, *, seed: int = 0, shuffle: bool = True, with_seeds: bool = True,
        rank: int = 0, world_size: int = 1, pad: bool = True,
    ) -> None:
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.with_seeds = with_seeds
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Choose the epoch; ``start`` skips that many of this rank's first samples (to
        finish an epoch that a resumed run had begun)."""
        self.epoch = epoch
        self.start = start

    def __len__(self) -> int:
        if self.pad:
            return -(-self.length // self.world_size)
        return len(range(self.rank, self.length, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int] | int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.length, generator=generator).tolist() if self.shuffle else range(self.length)
        # A distinct 63-bit seed per (seed, epoch, index), drawn from the same generator
        # so that it, too, depends on nothing else.
        seeds = torch.randint(0, 2**62, (self.length,), generator=generator).tolist()
        if self.world_size > 1:
            order = list(order)
            if self.pad:  # repeated whole when there are fewer images than ranks
                needed = len(self) * self.world_size
                order = (order * -(-needed // max(self.length, 1)))[:needed]
            order = order[self.rank :: self.world_size]
        for index in itertools.islice(order, self.start, None):
            yield (index, seeds[index]) if self.with_seeds else index
