"""One fold of a cross-validation, seen as a split dataset: ``FoldIndex``.

A dataset split with ``prep split --folds K`` keeps its training pool in ``train/`` and names
each image's fold in ``folds.csv`` (``prep.split.folds``). The view of fold k lists the
other folds' images as its ``train`` split and fold k's as its ``valid`` split, so a task that
lists its samples through the index (``classification_samples``, ``segmentation_pairs``,
``multilabel_samples``, as the built-in tasks do) trains on a fold with no change. Everything the folds share (the
listings, the masks' scan, the class table) is read once, by the dataset's own index.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prep.data.index import DatasetIndex
from prep.errors import FoldsError
from prep.layout import FOLDS_FILE, canonical_split_name
from prep.util.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    from prep.masks.scan import MaskScan


def _relative(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def checked_manifest(index: DatasetIndex) -> dict[str, int]:
    """``folds.csv`` of ``index``, checked to name exactly the images of its train split.

    Raises:
        FoldsError: see ``DatasetIndex.fold_manifest``.
    """
    from prep.split.folds import read_folds

    folds = read_folds(index.root)
    on_disk = {_relative(path, index.root) for path in index.train_images()}
    unnamed = sorted(on_disk - folds.keys())
    if unnamed:
        more = f" and {len(unnamed) - 1} more" if len(unnamed) > 1 else ""
        raise FoldsError(
            f"{index.root / unnamed[0]}{more} is in train/ but in no fold of {index.root / FOLDS_FILE} (added after the "
            f"split?); move it out, or split the dataset again"
        )
    gone = sorted(folds.keys() - on_disk)
    if gone:
        more = f" and {len(gone) - 1} more" if len(gone) > 1 else ""
        raise FoldsError(
            f"{index.root / FOLDS_FILE} names {gone[0]}{more}, which train/ no longer holds; put it back, or split the "
            f"dataset again"
        )
    return folds


class FoldIndex(DatasetIndex):
    """Fold ``fold`` of ``parent``'s cross-validation: ``train`` holds the images of every
    other fold, ``valid`` those of this one, ``test`` (when there is one) is the parent's.

    Attributes:
        parent: the dataset's own index, which every fold shares.
        fold: this fold's number. fold_count: how many there are.
    """

    def __init__(self, parent: DatasetIndex, fold: int) -> None:
        count = parent.fold_count
        if count == 0:
            raise FoldsError(
                f"--fold {fold}: {parent.root} was split without folds (it has no {FOLDS_FILE}); split it with "
                f"prep split SRC --folds 5, or train without --fold"
            )
        if not 0 <= fold < count:
            raise FoldsError(f"--fold {fold}: {parent.root} has {count} folds, numbered 0 to {count - 1}")
        super().__init__(parent.root, {**parent.splits, "valid": parent.splits["train"]})
        self._memo = parent._memo  # the listings, the masks' scan, the manifest: read once for all folds
        self.parent, self.fold, self.fold_count_ = parent, fold, count
        manifest = parent.fold_manifest()
        self._held_out = {rel for rel, f in manifest.items() if f == fold}

    @property
    def fold_count(self) -> int:  # type: ignore[override]
        return self.fold_count_

    def fold_view(self, fold: int) -> DatasetIndex:
        return self.parent.fold_view(fold)

    def _side(self, split: str | Path) -> str | None:
        """``train`` or ``valid`` when ``split`` is one of the fold's two sides, else None."""
        if isinstance(split, Path):
            return None
        name = canonical_split_name(split)
        return name if name in ("train", "valid") else None

    def _keeps(self, side: str, image: Path) -> bool:
        return (_relative(image, self.root) in self._held_out) == (side == "valid")

    def classification_samples(self, split: str | Path, classes: list[str]) -> list[tuple[Path, int]]:
        side = self._side(split)
        if side is None:
            return self.parent.classification_samples(split, classes)
        return [(path, label) for path, label in self.parent.classification_samples("train", classes) if self._keeps(side, path)]

    def segmentation_pairs(self, split: str) -> tuple[list[tuple[Path, Path]], list[Path]]:
        side = self._side(split)
        if side is None:
            return self.parent.segmentation_pairs(split)
        pairs, unpaired = self.parent.segmentation_pairs("train")
        return [(i, m) for i, m in pairs if self._keeps(side, i)], [i for i in unpaired if self._keeps(side, i)]

    def multilabel_samples(self, split: str, tags: list[str]) -> list[tuple[Path, tuple[int, ...]]]:
        side = self._side(split)
        if side is None:
            return self.parent.multilabel_samples(split, tags)
        return [(path, held) for path, held in self.parent.multilabel_samples("train", tags) if self._keeps(side, path)]

    def mask_scan(self, workers: int | None = None, progress: Progress = NO_PROGRESS) -> "MaskScan":
        return self.parent.mask_scan(workers, progress)  # the same masks, read once for every fold

    def __reduce__(self) -> tuple:
        return (_fold_of, (self.root, self.parent.splits, self.fold))

    def __repr__(self) -> str:
        return f"FoldIndex({str(self.root)!r}, fold={self.fold} of {self.fold_count_})"


def _fold_of(root: Path, splits: dict[str, Path], fold: int) -> FoldIndex:
    return FoldIndex(DatasetIndex(root, splits), fold)
