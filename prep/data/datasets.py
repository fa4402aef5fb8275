"""Torch datasets over a split dataset: classification and segmentation.

Samples are returned as uint8 arrays in channels-last layout (``H x W x 3``); converting to
float and normalising is left to the device (see ``prep.data.collate``), which is where it
is cheapest. A corrupt image met during training does not crash the run: the dataset
returns a ``CorruptSample`` for it, the collate functions drop it from the batch, and the
loader reports it once, by file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from prep.data.splits import class_names, classification_samples, find_split_dirs, segmentation_pairs
from prep.errors import DatasetNotFoundError
from prep.images import ImageDecodeError, load_rgb
from prep.layout import canonical_split_name


def _key(key) -> tuple[int, int | None]:
    """A dataset key is an index, or ``(index, sample_seed)`` from ``SeededSampler``."""
    return (key[0], key[1]) if isinstance(key, tuple) else (key, None)


def _transform(transform: Any, seed: int | None, **targets):
    if seed is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)  # the same sample, epoch and seed: the same result
    return transform(**targets)


class _SeedsOncePerBatch:
    """``__getitems__``, which the DataLoader calls with a whole batch of keys.

    Re-seeding albumentations costs about 130 us, a tenth of a sample's whole cost, so it
    is done once per batch, from the batch's first seed; the samples then draw from it in
    order. A batch's keys depend only on (seed, epoch), so the result still does too.
    """

    transform: Any

    def __getitems__(self, keys: list):
        first_seed = _key(keys[0])[1] if keys else None
        if first_seed is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(first_seed)
        return [self._item(_key(key)[0], None) for key in keys]

    def __getitem__(self, key):
        index, seed = _key(key)
        return self._item(index, seed)


class CorruptSample(NamedTuple):
    """Stands in for a sample whose file could not be read."""

    path: str
    reason: str


def _split_folder(root: Path, split: str) -> Path:
    splits = find_split_dirs(root)
    name = canonical_split_name(split)
    if name not in splits:
        raise DatasetNotFoundError(f"{root} has no {split} split (it has {', '.join(splits)})")
    return splits[name]


class ClassificationDataset(_SeedsOncePerBatch, torch.utils.data.Dataset):
    """``ROOT/<split>/<class>/<image>`` -> (``H x W x 3`` uint8 tensor, class index).

    Args:
        root: the dataset.
        split: ``train``, ``valid`` (``val``) or ``test``.
        transform: an albumentations pipeline, called as ``transform(image=...)``.
        classes: the class order; default: the train split's class folders, sorted. The
            mapping is stable and is recorded with every run.
        decode_min_side: let JPEGs decode at reduced scale while the short side stays at
            least this long (pass the training size when it is at most half the source).
    """

    accepts_sample_seeds = True  # see prep.data.sampling

    def __init__(self, root: Path, split: str = "train", transform: Any = None, classes: list[str] | None = None, decode_min_side: int | None = None) -> None:
        self.root = Path(root)
        self.classes = classes or class_names(find_split_dirs(self.root)["train"])
        self.class_to_index = {name: i for i, name in enumerate(self.classes)}
        self.samples = classification_samples(_split_folder(self.root, split), self.classes)
        self.transform = transform
        self.decode_min_side = decode_min_side

    def __len__(self) -> int:
        return len(self.samples)

    def _item(self, index: int, seed: int | None):
        path, target = self.samples[index]
        try:
            pixels = load_rgb(path, self.decode_min_side)
        except ImageDecodeError as exc:
            return CorruptSample(str(path), str(exc))
        if self.transform is not None:
            pixels = _transform(self.transform, seed, image=pixels)["image"]
        return torch.from_numpy(np.ascontiguousarray(pixels)), target


def load_mask(path: Path) -> np.ndarray:
    """A mask's class ids as ``H x W`` int64; 0/255 masks become 0/1."""
    from PIL import Image

    with Image.open(path) as mask:
        values = np.asarray(mask.convert("L") if mask.mode not in ("L", "P", "I;16", "I") else mask)
    values = values.astype(np.int64)
    if values.max(initial=0) == 255 and np.isin(values, (0, 255)).all():
        values //= 255
    return values


class SegmentationDataset(_SeedsOncePerBatch, torch.utils.data.Dataset):
    """``ROOT/<split>/images|masks`` -> (``H x W x 3`` uint8 tensor, ``H x W`` int64 mask).

    Images without a mask are left out. Arguments as for ``ClassificationDataset``.
    """

    accepts_sample_seeds = True  # see prep.data.sampling

    def __init__(self, root: Path, split: str = "train", transform: Any = None, decode_min_side: int | None = None) -> None:
        self.root = Path(root)
        self.samples, self.unpaired = segmentation_pairs(_split_folder(self.root, split))
        self.transform = transform
        self.decode_min_side = decode_min_side

    def __len__(self) -> int:
        return len(self.samples)

    def _item(self, index: int, seed: int | None):
        image_path, mask_path = self.samples[index]
        try:
            pixels = load_rgb(image_path, self.decode_min_side)
            mask = load_mask(mask_path)
        except (ImageDecodeError, OSError, ValueError) as exc:
            return CorruptSample(str(image_path), str(exc))
        if mask.shape != pixels.shape[:2]:
            import cv2

            mask = cv2.resize(mask.astype(np.uint8), pixels.shape[1::-1], interpolation=cv2.INTER_NEAREST).astype(np.int64)
        if self.transform is not None:
            out = _transform(self.transform, seed, image=pixels, mask=mask)
            pixels, mask = out["image"], out["mask"]
        return torch.from_numpy(np.ascontiguousarray(pixels)), torch.from_numpy(np.ascontiguousarray(mask))
