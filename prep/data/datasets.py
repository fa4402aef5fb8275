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


def _split_folder(root: Path, split: str | Path) -> Path:
    if isinstance(split, Path):  # a held-out folder, chosen by prep.data.heldout
        return split
    splits = find_split_dirs(root)
    name = canonical_split_name(split)
    if name not in splits:
        raise DatasetNotFoundError(f"{root} has no {split} split (it has {', '.join(splits)})")
    return splits[name]


class ClassificationDataset(_SeedsOncePerBatch, torch.utils.data.Dataset):
    """``ROOT/<split>/<class>/<image>`` -> (``H x W x 3`` uint8 tensor, class index).

    Args:
        root: the dataset.
        split: ``train``, ``valid`` (``val``) or ``test``; or the folder of class folders
            itself, as a ``Path`` (a held-out folder, see ``prep.data.heldout``).
        transform: an albumentations pipeline, called as ``transform(image=...)``.
        classes: the class order; default: the train split's class folders, sorted. The
            mapping is stable and is recorded with every run.
        decode_min_side: let JPEGs decode at reduced scale while the short side stays at
            least this long (pass the training size when it is at most half the source).
    """

    accepts_sample_seeds = True  # see prep.data.sampling

    def __init__(self, root: Path, split: str | Path = "train", transform: Any = None, classes: list[str] | None = None, decode_min_side: int | None = None) -> None:
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


def load_mask(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask's ids as ``H x W`` int64, read without a class table (see
    ``prep.segmentation.masks.mask_ids``); 0/255 masks become 0/1."""
    from prep.segmentation.masks import mask_ids

    return mask_ids(Path(path), size=size)


class SegmentationDataset(_SeedsOncePerBatch, torch.utils.data.Dataset):
    """``ROOT/<split>/images|masks`` -> (``H x W x 3`` uint8 tensor, ``H x W`` int64 class indices).

    Images without a mask are left out. A mask of another size than its image (a JPEG
    decoded at reduced scale, a mask saved at half size) is read at the image's size,
    nearest-neighbour (``decode_mask`` is given the size).
    Other arguments as for ``ClassificationDataset``.

    Args:
        decode_mask: ``(mask file, (height, width))`` -> class indices of that size,
            ``IGNORE_INDEX`` for ignored pixels (default: the ids as stored, 0/255 read as
            0/1); the segmentation task passes a ``prep.segmentation.masks.MaskDecoder`` for
            the dataset's classes.
    """

    accepts_sample_seeds = True  # see prep.data.sampling

    def __init__(self, root: Path, split: str = "train", transform: Any = None, decode_min_side: int | None = None, decode_mask: Any = None) -> None:
        self.root = Path(root)
        self.samples, self.unpaired = segmentation_pairs(_split_folder(self.root, split))
        self.transform = transform
        self.decode_min_side = decode_min_side
        self.decode_mask = decode_mask or load_mask

    def __len__(self) -> int:
        return len(self.samples)

    def _item(self, index: int, seed: int | None):
        from prep.segmentation.masks import IGNORE_INDEX

        image_path, mask_path = self.samples[index]
        try:
            pixels = load_rgb(image_path, self.decode_min_side)
            mask = self.decode_mask(mask_path, pixels.shape[:2])
        except (ImageDecodeError, OSError, ValueError) as exc:
            return CorruptSample(str(image_path), str(exc))
        # Augmentations resize masks with OpenCV, which takes 8- and 16-bit masks; the ignore
        # value travels as the largest value of the type.
        small = np.uint8 if mask.max(initial=0) < 255 else np.uint16
        sentinel = np.iinfo(small).max
        mask = np.where(mask == IGNORE_INDEX, sentinel, mask).astype(small)
        if self.transform is not None:
            out = _transform(self.transform, seed, image=pixels, mask=mask)
            pixels, mask = out["image"], out["mask"]
        target = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
        target[target == sentinel] = IGNORE_INDEX
        return torch.from_numpy(np.ascontiguousarray(pixels)), target
