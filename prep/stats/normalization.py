"""``--normalize auto|imagenet|dataset``: the mean and std a run normalises its images with.

Pretrained weights only see what they were trained on when the images are normalised the
same way: ImageNet's constants for torchvision's weights and for nearly every published
file. A model trained from scratch is better served by the dataset's own exact statistics
(``stats.json``, computed when missing). ``auto`` chooses between the two from the weights.
The choice is stored in every checkpoint, so that evaluate, predict and export use it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prep.errors import check_choice
from prep.util.progress import NO_PROGRESS

if TYPE_CHECKING:
    from prep.util.progress import Progress

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

AUTO, IMAGENET, DATASET = "auto", "imagenet", "dataset"
# What ``auto`` resolves to when the starting weights name their own mean and std.
PRETRAINED = "pretrained"
MODES = (AUTO, IMAGENET, DATASET)
NORMALIZE_HELP = (
    "auto (for pretrained weights, the constants they were trained with: ImageNet's, or a timm model's own; "
    "else the dataset's stats.json) | imagenet | dataset."
)


@dataclass(frozen=True)
class Normalization:
    """A run's normalisation and where it came from.

    Attributes:
        mode: ``imagenet``, ``dataset`` or (the weights' own constants) ``pretrained``, as
            resolved from ``auto``.
        source: where the numbers came from, for people (``ImageNet's constants``,
            ``stats.json``, ``stats.json, computed now``).
    """

    mode: str
    mean: list[float]
    std: list[float]
    source: str

    def describe(self) -> str:
        return f"{self.mode} ({self.source})"


def check_normalize(mode: str) -> str:
    """``mode`` when it is one of ``MODES`` (else a ``UsageError``)."""
    return check_choice("--normalize", mode, MODES)


def resolve_normalization(
    root: Path, mode: str, pretrained: bool, workers: int | None, may_compute: bool = True, progress: "Progress | None" = None,
    pretrained_constants: "tuple[list[float], list[float], str] | None" = None,
) -> Normalization:
    """The run's mean and std: ImageNet's for ``imagenet``; for ``auto`` with pretrained
    weights, ``pretrained_constants`` (mean, std, their source: what the weights were
    trained with) or else ImageNet's; otherwise the dataset's ``stats.json``, computed and written when missing and
    ``may_compute``; for a fold of a cross-validation (``root.fold``), the statistics of
    that fold's training part (``prep.stats.fold_stats``).

    Raises:
        UsageError: an unknown mode. StatsNotFoundError: no stats.json and not ``may_compute``.
    """
    check_normalize(mode)
    if mode == AUTO and pretrained and pretrained_constants is not None:
        mean, std, source = pretrained_constants
        return Normalization(PRETRAINED, list(mean), list(std), source)
    if mode == IMAGENET or (mode == AUTO and pretrained):
        return Normalization(IMAGENET, IMAGENET_MEAN, IMAGENET_STD, "ImageNet's constants")
    if getattr(root, "fold", None) is not None:
        from prep.stats.fold_stats import fold_mean_std

        mean, std = fold_mean_std(root, workers, progress or NO_PROGRESS)
        return Normalization(DATASET, mean, std, f"fold {root.fold}'s training part only")
    from prep.errors import StatsNotFoundError
    from prep.stats.dataset_stats import compute_dataset_stats, read_mean_std, stats_kind, write_stats

    try:
        mean, std = read_mean_std(root)
        return Normalization(DATASET, mean, std, f"stats.json, {stats_kind(root)}")
    except StatsNotFoundError:
        if not may_compute:
            raise
        write_stats(root, compute_dataset_stats(root, workers=workers, progress=progress or NO_PROGRESS))
        mean, std = read_mean_std(root)
        return Normalization(DATASET, mean, std, "stats.json, computed now")
