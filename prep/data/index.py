"""A split dataset, listed once: ``DatasetIndex``.

The layout is the contract in ``prep.layout``: ``ROOT/<split>/<class>/<image>`` for
classification, ``ROOT/<split>/images|masks/`` for segmentation, ``ROOT/<split>/images/`` and
``labels.csv`` for multi-label classification. A command opens the index
of its dataset once and hands it on, to the task, the datasets, the statistics and the
cache; each folder is listed the first time something asks for it, and the masks are read
once (``mask_scan``), however many parts need them.

An index stands for its dataset's root wherever a path is expected (``os.fspath``, ``str``,
``index / "stats.json"``, and every ``Path`` method, which it passes on to ``root``), so that
a plugin's task written for a root ``Path`` takes one unchanged.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from prep.errors import DatasetNotFoundError, UnfinishedSplitError
from prep.layout import (
    CLASS_TABLE, IMAGES_DIR, MASK_SUFFIX, MASKS_DIR, MULTILABEL, REJECTED_DIR, SEGMENTATION, SPLITS,
    canonical_split_name, is_image_name, is_junk, split_kind,
)
from prep.split.journal import Status, split_status
from prep.util.progress import NO_PROGRESS, Progress

if TYPE_CHECKING:
    from prep.masks.class_table import ClassTable
    from prep.masks.scan import DatasetClasses, MaskScan

T = TypeVar("T")


class DatasetIndex:
    """The splits, classes and samples of a dataset that ``prep split`` made, each listed once.

    Attributes:
        root: the dataset's folder, as given.
        splits: canonical split name -> folder, for the splits present.
    """

    def __init__(self, root: Path, splits: dict[str, Path]) -> None:
        self.root, self.splits = Path(root), splits
        self._memo: dict[Any, Any] = {}

    @classmethod
    def open(cls, root: Path | str) -> "DatasetIndex":
        """List ``root`` once and find its splits.

        Raises:
            DatasetNotFoundError: not a folder, no train split, or a train split of unsorted images.
            UnfinishedSplitError: the split's journal says it was stopped half-way.
        """
        root = Path(root)
        if not root.is_dir():
            raise DatasetNotFoundError(f"{root} is not a folder")
        status = split_status(root)
        if status in (Status.IN_PROGRESS, Status.UNDOING):
            doing = "split" if status == Status.IN_PROGRESS else "undo of the split"
            raise UnfinishedSplitError(
                f"The {doing} in {root} was stopped half-way (its journal says {status}), so some files are not "
                f"in place yet. Finish it by running the same prep split command again, or put everything back "
                f"with: prep split --undo {root}"
            )
        index = cls(root, {})
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if entry.is_dir() and not is_junk(entry.name, is_dir=True) and entry.name != REJECTED_DIR:
                name = canonical_split_name(entry.name)
                # Kaggle's unlabeled test/ of bare images is no split (prep split writes the test split as testing/).
                if name in SPLITS and name not in index.splits and not (name != "train" and index._unsorted(Path(entry.path))):
                    index.splits[name] = Path(entry.path)
        if "train" not in index.splits:
            raise DatasetNotFoundError(f"{root} has no train/ folder; run prep split on it first.")
        index._check_sorted()
        return index

    @classmethod
    def of(cls, dataset: "DatasetIndex | Path | str") -> "DatasetIndex":
        """``dataset`` itself when it is an index, else the index of the folder it names."""
        return dataset if isinstance(dataset, DatasetIndex) else cls.open(dataset)

    def once(self, key: Any, compute: Callable[[], T]) -> T:
        """``compute()``, called the first time ``key`` is asked of this index (and of the
        views of its folds): what a command reads from the dataset once for all its parts."""
        return self._memoised(key, compute)

    def _memoised(self, key: Any, compute: Callable[[], T]) -> T:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def _entries(self, folder: Path) -> list[os.DirEntry]:
        """The entries of ``folder``, listed once."""
        return self._memoised(("entries", folder), lambda: sorted(os.scandir(folder), key=lambda e: e.name))

    def _unsorted(self, folder: Path) -> bool:
        """A folder of bare images and no folders, such as Kaggle's unlabeled ``test/``."""
        entries = self._entries(folder)
        if any(e.is_dir() and not is_junk(e.name, is_dir=True) for e in entries):
            return False
        return any(e.is_file() and is_image_name(e.name) and not is_junk(e.name) for e in entries)

    def _check_sorted(self) -> None:
        """A train folder of bare images is a raw Kaggle download that was never split.

        Raises:
            DatasetNotFoundError: naming the folder and the command that sorts it.
        """
        train = self.splits["train"]
        if self._unsorted(train):
            first_image = next(e.name for e in self._entries(train) if e.is_file() and is_image_name(e.name) and not is_junk(e.name))
            raise DatasetNotFoundError(
                f"{self.splits['train']} holds unsorted images (such as {first_image}), not class folders: "
                f"run prep split {self.root} first"
            )

    # -- What the dataset is --------------------------------------------------------------

    @property
    def kind(self) -> str:
        """``classification``, ``segmentation`` or ``multilabel``: the layout of the train
        split (see ``prep.layout``)."""
        return self._memoised("kind", lambda: split_kind(self.splits["train"]))

    def folder(self, split: str) -> Path:
        """The folder of ``split`` (``val`` is ``valid``).

        Raises:
            DatasetNotFoundError: the dataset has no such split.
        """
        name = canonical_split_name(split)
        if name not in self.splits:
            raise DatasetNotFoundError(f"{self.root} has no {split} split (it has {', '.join(self.splits)})")
        return self.splits[name]

    def class_names(self) -> list[str]:
        """The train split's class folders, sorted: their order is the class index (for a
        multi-label dataset: every tag its labels.csv names, sorted)."""
        if self.kind == MULTILABEL:
            return sorted({tag for tags in self.split_tags("train").values() for tag in tags})
        return class_folders(self._entries(self.splits["train"]))

    def split_tags(self, split: str) -> dict[str, tuple[str, ...]]:
        """A multi-label split's ``labels.csv``: image file name -> its tags (read once).

        Raises:
            LabelsFileError: a missing or malformed labels.csv, or one that does not name
                exactly the images of the split's images/ (see ``prep.split.tag_manifest``).
        """
        from prep.split.tag_manifest import read_labels

        folder = self.folder(split)
        return self._memoised(("tags", folder), lambda: read_labels(folder, images_in(self._entries(folder / IMAGES_DIR))))

    def multilabel_samples(self, split: str, tags: list[str]) -> list[tuple[Path, tuple[int, ...]]]:
        """(image, the indices of its tags in ``tags``) for every image of a multi-label split,
        in file name order.

        Raises:
            DatasetNotFoundError: the split has a tag that ``tags`` lacks.
        """
        folder = self.folder(split)
        index = {name: i for i, name in enumerate(tags)}
        samples = []
        for name, held in sorted(self.split_tags(split).items()):
            unknown = next((tag for tag in held if tag not in index), None)
            if unknown is not None:
                raise DatasetNotFoundError(
                    f"{folder / IMAGES_DIR / name} is tagged {unknown!r}, a tag that the train split does not have "
                    f"({len(tags)} tags: {', '.join(tags[:8])}{', ...' if len(tags) > 8 else ''})"
                )
            samples.append((folder / IMAGES_DIR / name, tuple(index[tag] for tag in held)))
        return samples

    def classification_samples(self, split: str | Path, classes: list[str]) -> list[tuple[Path, int]]:
        """(image, class index) for every image of a split (or of a folder of class folders),
        in a stable order.

        Raises:
            DatasetNotFoundError: the split has a class that ``classes`` lacks.
        """
        folder = split if isinstance(split, Path) else self.folder(split)
        index = {name: i for i, name in enumerate(classes)}
        samples = []
        for name in class_folders(self._entries(folder)):
            if name not in index:
                raise DatasetNotFoundError(f"{folder / name} is a class that the train split does not have ({', '.join(classes)})")
            samples += [(path, index[name]) for path in images_in(self._entries(folder / name))]
        return samples

    def segmentation_pairs(self, split: str) -> tuple[list[tuple[Path, Path]], list[Path]]:
        """(image, mask) pairs of a split matched by name (a ``_mask`` suffix is allowed), and
        the images that have no mask."""
        folder = self.folder(split)
        masks = {mask.stem.removesuffix(MASK_SUFFIX): mask for mask in images_in(self._entries(folder / MASKS_DIR))}
        pairs, unpaired = [], []
        for image in images_in(self._entries(folder / IMAGES_DIR)):
            mask = masks.get(image.stem)
            if mask is None:
                unpaired.append(image)
            else:
                pairs.append((image, mask))
        return pairs, unpaired

    # -- Cross-validation folds (``prep split --folds K``) -----------------------------------

    fold: int | None = None  # on a fold's view (``prep.data.folds.FoldIndex``): its number

    def fold_manifest(self) -> dict[str, int]:
        """Each train image (its path relative to the root) -> its fold, from ``folds.csv``,
        checked to name exactly the images ``train/`` holds.

        Raises:
            FoldsError: no folds.csv (the dataset has no folds), a malformed one, or one that
                does not match train/ (a file added or removed since the split), named.
        """
        from prep.data.folds import checked_manifest

        return self._memoised("fold manifest", lambda: checked_manifest(self))

    @property
    def fold_count(self) -> int:
        """The number of cross-validation folds (0 for a dataset split without folds)."""
        from prep.layout import FOLDS_FILE

        if not (self.root / FOLDS_FILE).is_file():
            return 0
        return max(self.fold_manifest().values()) + 1

    def fold_view(self, fold: int) -> "DatasetIndex":
        """Fold ``fold`` of the cross-validation: ``train`` is the other folds' images, ``valid``
        is this fold's (``prep.data.folds.FoldIndex``).

        Raises:
            FoldsError: the dataset has no folds, or not this one.
        """
        from prep.data.folds import FoldIndex

        return FoldIndex(self, fold)

    def train_images(self) -> list[Path]:
        """Every image of the train split, whatever the layout."""
        if self.kind == SEGMENTATION:
            pairs, unpaired = self.segmentation_pairs("train")
            return sorted([image for image, _ in pairs] + unpaired)
        if self.kind == MULTILABEL:
            return images_in(self._entries(self.splits["train"] / IMAGES_DIR))
        return [path for path, _ in self.classification_samples("train", self.class_names())]

    # -- The class table and the masks ----------------------------------------------------

    def class_table(self) -> "ClassTable | None":
        """The dataset's class table (``ROOT/classes.csv``), or None when it has none.

        Raises:
            ClassTableError: a malformed table.
        """
        from prep.masks.class_table import dataset_class_table

        return self._memoised("class table", lambda: dataset_class_table(self.root))

    def class_table_text(self) -> str | None:
        """The class table as written, kept in every checkpoint: predict colours its masks with it."""
        path = self.root / CLASS_TABLE
        return path.read_text(encoding="utf-8-sig") if path.is_file() else None

    def mask_scan(self, workers: int | None = None, progress: Progress = NO_PROGRESS) -> "MaskScan":
        """Every mask of every split, read once (see ``prep.masks.scan``)."""
        from prep.masks.scan import scan_dataset_masks

        def scan() -> "MaskScan":
            masks = [str(mask) for split in self.splits for _, mask in self.segmentation_pairs(split)[0]]
            return scan_dataset_masks(masks, self.class_table(), workers, progress)

        return self._memoised("mask scan", scan)

    def mask_classes(self, workers: int | None = None, progress: Progress = NO_PROGRESS) -> "DatasetClasses":
        """The classes the masks make, with the class table's names when there is one.

        Raises:
            MaskError: unreadable masks, or ids that are no class (files and values named).
            ClassTableError: a malformed ``classes.csv``.
        """
        from prep.masks.scan import classes_of

        return self._memoised("mask classes", lambda: classes_of(self.mask_scan(workers, progress), self.class_table()))

    def mask_class_pixels(self, split: str) -> list[int]:
        """Pixels of each class (in ``mask_classes().names`` order) over one split's masks."""
        found = self.mask_classes()
        pixels = found.scan.pixels_of([str(mask) for _, mask in self.segmentation_pairs(split)[0]])
        return [pixels.get(i, 0) for i in found.mapping.ids]

    def mask_classes_held(self, split: str) -> list[tuple[int, ...]]:
        """The classes (indices into ``mask_classes().names``) each mask of one split holds,
        in the order of ``segmentation_pairs(split)``."""
        found = self.mask_classes()
        index_of = {class_id: i for i, class_id in enumerate(found.mapping.ids)}
        return [
            tuple(sorted(index_of[v] for v in found.scan.per_mask.get(str(mask), {}) if v in index_of))
            for _, mask in self.segmentation_pairs(split)[0]
        ]

    # -- Standing for the root ------------------------------------------------------------

    def __reduce__(self) -> tuple:
        # A copy sent to another process lists again what it needs: directory entries do not pickle.
        return (DatasetIndex, (self.root, self.splits))

    def __fspath__(self) -> str:
        return os.fspath(self.root)

    def __str__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"DatasetIndex({str(self.root)!r}, splits={list(self.splits)})"

    def __truediv__(self, other: str | os.PathLike) -> Path:
        return self.root / other

    def __getattr__(self, name: str) -> Any:
        root = self.__dict__.get("root")
        if name.startswith("_") or root is None:  # copying and pickling ask before the state is set
            raise AttributeError(name)
        return getattr(root, name)


def class_folders(entries: list[os.DirEntry]) -> list[str]:
    """The class folders among a split folder's entries, sorted."""
    return sorted(e.name for e in entries if e.is_dir() and not is_junk(e.name, is_dir=True))


def images_in(entries: list[os.DirEntry]) -> list[Path]:
    """The image files among a folder's entries, sorted."""
    return sorted(Path(e.path) for e in entries if e.is_file() and not is_junk(e.name) and is_image_name(e.name))
