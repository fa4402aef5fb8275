"""How unevenly a training split holds its classes, and the class weights that even it out.

A split is *imbalanced* when its largest class has more than ``IMBALANCE_RATIO`` (2) times
the samples of its smallest: images per class for classification, pixels per class for
segmentation. Then ``prep stats`` and the run's header say so, and ``prep train`` adapts
its defaults (see ``prep.train.imbalance``).

``--class-weights auto`` gives each class the inverse square root of its count, scaled so
that the mean weight over the training samples is 1::

    w_c = n_c^(-1/2) * N / sum_k n_k^(1/2)        (N = sum_k n_k)

Why the square root: full inverse frequency (``1 / n_c``) makes every class weigh the same
in total, which with a rare class of 20 images beside one of 2,000 puts a hundred times the
gradient on each of the 20; the model then overfits them and the loss becomes noisy. The
square root halves that gap on a log scale (10x here), as in Mahajan et al. 2018's
square-root sampling and word2vec's subsampling. Keeping the mean weight at 1 keeps the
loss, and so the learning rate that suits it, where it was. A class with no samples gets
the largest weight of the others (its weight then only matters to the Dice of
segmentation, where it stands for a class worth finding).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

IMBALANCE_RATIO = 2.0  # 70/30 is imbalanced; 60/40 is not


def auto_class_weights(counts: Sequence[int]) -> list[float]:
    """The ``auto`` class weights for these per-class counts (see the module docstring)."""
    present = [n for n in counts if n > 0]
    if not present:
        return [1.0] * len(counts)
    scale = sum(present) / sum(math.sqrt(n) for n in present)
    weights = [scale / math.sqrt(n) if n > 0 else None for n in counts]
    largest = max(w for w in weights if w is not None)
    return [round(w if w is not None else largest, 6) for w in weights]


@dataclass(frozen=True)
class ClassBalance:
    """The training split's samples per class.

    Attributes:
        classes: the class names. counts: samples (images, or pixels) of each.
        unit: what is counted: ``images`` or ``pixels``.
    """

    classes: tuple[str, ...]
    counts: tuple[int, ...]
    unit: str = "images"

    @property
    def ratio(self) -> float | None:
        """The largest class's count over the smallest's, among classes that have samples."""
        present = [n for n in self.counts if n > 0]
        return max(present) / min(present) if present else None

    @property
    def imbalanced(self) -> bool:
        return self.ratio is not None and self.ratio > IMBALANCE_RATIO

    def absent(self) -> list[str]:
        """The classes with no samples in the split."""
        return [name for name, n in zip(self.classes, self.counts) if n == 0]

    def describe(self) -> str:
        """One line: ``imbalanced: the largest class (dog, 900 images) has 9.0x the smallest (cat, 100 images)``."""
        present = [(n, name) for name, n in zip(self.classes, self.counts) if n > 0]
        if not present:
            return f"no class has {self.unit}"
        (most, large), (least, small) = max(present), min(present)
        kind = "imbalanced" if self.imbalanced else "balanced enough"
        return f"{kind}: the largest class ({large}, {most:,} {self.unit}) has {most / least:.1f}x the smallest ({small}, {least:,})"
