"""Finding the splits, classes and samples of a dataset that ``prep split`` made.

The layout is the contract in ``prep.layout``: ``ROOT/<split>/<class>/<image>`` for
classification, ``ROOT/<split>/images|masks/`` for segmentation.
"""

from __future__ import annotations

import os
from pathlib import Path

from prep.errors import DatasetNotFoundError, UnfinishedSplitError
from prep.layout import IMAGES_DIR, MASK_SUFFIX, MASKS_DIR, REJECTED_DIR, SEGMENTATION, SPLITS, canonical_split_name, is_image_name, is_junk, split_kind
from prep.split.journal import Status, split_status


def find_split_dirs(root: Path) -> dict[str, Path]:
    """Canonical split name -> folder, for the splits present under ``root``.

    Raises:
        DatasetNotFoundError: there is no train split.
        UnfinishedSplitError: the split's journal says it was stopped half-way.
    """
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
    found = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and not is_junk(entry.name, is_dir=True) and entry.name != REJECTED_DIR:
            name = canonical_split_name(entry.name)
            if name in SPLITS:
                found.setdefault(name, Path(entry.path))
    if "train" not in found:
        raise DatasetNotFoundError(f"{root} has no train/ folder; run prep split on it first.")
    _check_sorted(root, found["train"])
    return found


def _check_sorted(root: Path, train: Path) -> None:
    """A train folder of bare images is a raw Kaggle download that was never split.

    Raises:
        DatasetNotFoundError: naming the folder and the command that sorts it.
    """
    has_folders, first_image = False, None
    with os.scandir(train) as entries:
        for entry in entries:
            if entry.is_dir() and not is_junk(entry.name, is_dir=True):
                has_folders = True
                break
            if first_image is None and entry.is_file() and is_image_name(entry.name) and not is_junk(entry.name):
                first_image = entry.name
    if first_image is not None and not has_folders:
        raise DatasetNotFoundError(
            f"{train} holds unsorted images (such as {first_image}), not class folders: "
            f"run prep split {root} first"
        )


def dataset_kind(root: Path) -> str:
    """``segmentation`` or ``classification``: the layout of the dataset's train split
    (see ``prep.layout``)."""
    return split_kind(find_split_dirs(root)["train"])


def is_segmentation(root: Path) -> bool:
    """True when the train split holds ``images/`` and ``masks/`` folders."""
    return dataset_kind(root) == SEGMENTATION


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        Path(e.path) for e in os.scandir(folder)
        if e.is_file() and not is_junk(e.name) and is_image_name(e.name)
    )


def class_names(split_dir: Path) -> list[str]:
    """The class folders of a split, sorted: their order is the class index."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not is_junk(e.name, is_dir=True))


def classification_samples(split_dir: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(image, class index) for every image of a split, in a stable order.

    Raises:
        DatasetNotFoundError: the split has a class that ``classes`` lacks.
    """
    index = {name: i for i, name in enumerate(classes)}
    samples = []
    for name in class_names(split_dir):
        if name not in index:
            raise DatasetNotFoundError(
                f"{split_dir / name} is a class that the train split does not have ({', '.join(classes)})"
            )
        samples += [(path, index[name]) for path in _images_in(split_dir / name)]
    return samples


def segmentation_pairs(split_dir: Path) -> tuple[list[tuple[Path, Path]], list[Path]]:
    """(image, mask) pairs of a split matched by name (a ``_mask`` suffix is allowed), and
    the images that have no mask."""
    masks = {}
    for mask in _images_in(split_dir / MASKS_DIR):
        masks[mask.stem.removesuffix(MASK_SUFFIX)] = mask
    pairs, unpaired = [], []
    for image in _images_in(split_dir / IMAGES_DIR):
        mask = masks.get(image.stem)
        if mask is None:
            unpaired.append(image)
        else:
            pairs.append((image, mask))
    return pairs, unpaired
