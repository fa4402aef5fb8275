"""How a run normalises its images: ImageNet's constants for ImageNet weights, else the
dataset's own mean and std (``stats.json``, computed when missing)."""

from __future__ import annotations

from pathlib import Path

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def normalization(root: Path, pretrained: bool, workers: int | None, may_compute: bool = True) -> tuple[list[float], list[float], str]:
    """ImageNet's constants for ImageNet weights, else stats.json (computed if missing,
    when ``may_compute``)."""
    if pretrained:
        return IMAGENET_MEAN, IMAGENET_STD, "imagenet"
    from prep.errors import StatsNotFoundError
    from prep.stats.dataset_stats import compute_dataset_stats, read_mean_std, write_stats

    try:
        mean, std = read_mean_std(root)
        return mean, std, "stats.json"
    except StatsNotFoundError:
        if not may_compute:
            raise
        write_stats(root, compute_dataset_stats(root, workers=workers))
        mean, std = read_mean_std(root)
        return mean, std, "computed now"
