"""Builds the Kaggle-like JPEG set that the stats and loader benchmarks share."""

from __future__ import annotations

from pathlib import Path


def build_split_dataset(folder: Path, per_class: int) -> Path:
    """``prep sample`` images (300-500 px, varied content) split into ``train/<class>/``.

    Everything goes to train (no valid split), so the benchmarks read all of it.
    """
    from prep.split.sample import write_sample
    from prep.split.api import split_dataset
    from prep.split.plan import SplitOptions
    from prep.split.splitters import SplitSize

    if not (folder / "train" / "cat").is_dir():
        write_sample(folder, n=per_class, seed=0)
        split_dataset(folder, SplitOptions(valid=SplitSize(0, False)))
    return folder
