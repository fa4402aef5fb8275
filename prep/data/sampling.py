"""A sampler whose order and per-sample augmentation seeds depend only on (seed, epoch).

A resumed run must replay exactly what an uninterrupted one would have done. Seeding the
shuffle once, or each worker's augmentations once, does not allow that: their random state
runs on from epoch to epoch. This sampler yields ``(index, sample_seed)`` pairs. The order
is a permutation drawn from ``seed + epoch``, and each sample's seed is derived from
``(seed, epoch, index)``; prep's datasets re-seed their transform from it (once per batch,
from its first sample, which is as deterministic and far cheaper). Call
``set_epoch`` before each epoch, as with torch's DistributedSampler.

With ``weights`` (``--sampler balanced``), an epoch is as many draws, with replacement, each
sample drawn in proportion to its weight (``balanced_weights``), from the same generator:
as repeatable and as resumable as the shuffle, and each draw has its own sample seed, so an
image drawn twice is augmented twice differently.

Under torchrun each rank takes every ``world_size``-th pair of the same order. For
training (``pad``), the order is padded by repeating its start so that every rank has as
many batches as the others, which DDP needs; evaluation shards without padding, so no
image is counted twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch


def balanced_weights(sample_classes: Sequence[Sequence[int]], num_classes: int) -> list[float]:
    """A drawing weight per sample that gives every class about the same share of draws:
    ``max over the classes c it holds of 1 / n_c``, where ``n_c`` is how many samples hold
    ``c``. With one class per sample (classification) each class is drawn equally often;
    for masks, which hold several, an image is drawn as often as its rarest class asks, as
    in repeat-factor sampling (Gupta et al. 2019). A sample that holds no class weighs as
    the most common class's."""
    holding = [0] * num_classes
    for classes in sample_classes:
        for c in set(classes):
            holding[c] += 1
    floor = 1 / max(max(holding), 1)
    return [max((1 / holding[c] for c in classes), default=floor) for classes in sample_classes]


class SeededSampler(torch.utils.data.Sampler):
    """Yields ``(index, sample_seed)`` (or plain indexes when ``with_seeds`` is false, for
    datasets that do not take seeds); shuffled per epoch when ``shuffle``."""

    def __init__(
        self, length: int, *, seed: int = 0, shuffle: bool = True, with_seeds: bool = True,
        rank: int = 0, world_size: int = 1, pad: bool = True, weights: Sequence[float] | None = None,
    ) -> None:
        if weights is not None and len(weights) != length:
            raise ValueError(f"{len(weights)} sampling weights for {length} samples")
        self.weights = torch.tensor(weights, dtype=torch.float64) if weights is not None else None
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
        drawn = self.weights is not None and self.length > 0
        if drawn:
            order = torch.multinomial(self.weights, self.length, replacement=True, generator=generator).tolist()
        else:
            order = torch.randperm(self.length, generator=generator).tolist() if self.shuffle else range(self.length)
        # A distinct 63-bit seed per (seed, epoch, index), drawn from the same generator
        # so that it, too, depends on nothing else (per draw when an image can come twice).
        seeds = torch.randint(0, 2**62, (self.length,), generator=generator).tolist()
        pairs = [(index, seeds[position if drawn else index]) for position, index in enumerate(order)]
        if self.world_size > 1:
            if self.pad:  # repeated whole when there are fewer images than ranks
                needed = len(self) * self.world_size
                pairs = (pairs * -(-needed // max(self.length, 1)))[:needed]
            pairs = pairs[self.rank :: self.world_size]
        for index, sample_seed in itertools.islice(pairs, self.start, None):
            yield (index, sample_seed) if self.with_seeds else index
