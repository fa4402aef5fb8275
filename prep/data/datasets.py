"""Torch datasets over a split dataset: classification, multi-label and segmentation.

Samples are returned as uint8 arrays in channels-last layout (``H x W x 3``); converting to
float and normalising is left to the device (see ``prep.data.collate``), which is where it
is cheapest. A corrupt image met during training does not crash the run: the dataset
returns a ``CorruptSample`` for it, the collate functions drop it from the batch, and the
loader reports it once, by file name.

Each dataset reads its samples through a decoder (``ImageDecoder``, ``ImageMaskDecoder``):
the image at the short side training needs (``prep.data.resolution``), the mask at the
image's size. A decoded cache (``prep.data.cache``), when one is attached as ``cache``,
holds exactly what the decoder gives, so cached and uncached runs see the same pixels.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from prep.data.cache import DamagedCacheError
from prep.data.decoders import ImageDecoder, ImageMaskDecoder
from prep.data.index import DatasetIndex
from prep.images.decode import ImageDecodeError


def _key(key) -> tuple[int, int | None]:
    """A dataset key is an index, or ``(index, sample_seed)`` from ``SeededSampler``."""
    return (key[0], key[1]) if isinstance(key, tuple) else (key, None)


def _transform(transform: Any, seed: int | None, **targets):
    if seed is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed)  # the same sample, epoch and seed: the same result
    return transform(**targets)


class TimedSamples(list):
    """A batch's samples, with the seconds it took to decode and augment them (what the
    loader's images/s is measured from, in the worker that did the work)."""

    seconds: float = 0.0


class _SeedsOncePerBatch:
    """``__getitems__``, which the DataLoader calls with a whole batch of keys.

    Re-seeding albumentations costs about 130 us, a tenth of a sample's whole cost, so it
    is done once per batch, from the batch's first seed; the samples then draw from it in
    order. A batch's keys depend only on (seed, epoch), so the result still does too.
    """

    transform: Any

    def __getitems__(self, keys: list):
        began = time.perf_counter()
        first_seed = _key(keys[0])[1] if keys else None
        if first_seed is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(first_seed)
        samples = TimedSamples(self._item(_key(key)[0], None) for key in keys)
        samples.seconds = time.perf_counter() - began
        return samples

    def __getitem__(self, key):
        index, seed = _key(key)
        return self._item(index, seed)


class _Decoded:
    """What both datasets share: samples decoded by ``decoder``, or read from ``cache``."""

    decoder: ImageDecoder
    cache: Any = None  # a prep.data.cache.DecodedStore holding this dataset's samples

    def sample_files(self, index: int) -> tuple[Path, ...]:
        """The files sample ``index`` is decoded from (what a cache checks for changes)."""
        raise NotImplementedError

    def decoded(self, index: int):
        """Sample ``index`` before augmentation, ``(pixels, mask or None)``, or a
        ``CorruptSample`` naming its file and why it could not be read."""
        try:
            if self.cache is not None:
                return self.cache.read(index)
            return self.decoder(self.sample_files(index))
        except ImageDecodeError as exc:
            return CorruptSample(str(self.sample_files(index)[0]), str(exc))
        except DamagedCacheError:
            raise DamagedCacheError.of(self.cache.folder, f"the stored sample of {self.sample_files(index)[0]}") from None


class CorruptSample(NamedTuple):
    """Stands in for a sample whose file could not be read."""

    path: str
    reason: str


class ClassificationDataset(_Decoded, _SeedsOncePerBatch, torch.utils.data.Dataset):
    """``ROOT/<split>/<class>/<image>`` -> (``H x W x 3`` uint8 tensor, class index).

    Args:
        root: the dataset.
        split: ``train``, ``valid`` (``val``) or ``test``; or the folder of class folders
            itself, as a ``Path`` (a held-out folder, see ``prep.builtin_tasks.classification.heldout``).
        transform: an albumentations pipeline, called as ``transform(image=...)``.
        classes: the class order; default: the train split's class folders, sorted. The
            mapping is stable and is recorded with every run.
        decode_side: decode each image with its short side brought down to this (see
            ``prep.data.resolution.source_side``); None: at full resolution.
    """

    accepts_sample_seeds = True  # see prep.data.sampling

    def __init__(self, root: "Path | DatasetIndex", split: str | Path = "train", transform: Any = None, classes: list[str] | None = None, decode_side: int | None = None) -> None:
        held_out = isinstance(split, Path)  # a folder of class folders, read as it is
        index = DatasetIndex(split, {}) if held_out else DatasetIndex.of(root)
        self.root = Path(root) if held_out else index.root
        self.classes = classes or index.class_names()
        self.class_to_index = {name: i for i, name in enumerate(self.classes)}
        self.samples = index.classification_samples(split, self.classes)
        self.transform = transform
        self.decoder = ImageDecoder(decode_side)

    def __len__(self) -> int:
        return len(self.samples)

    def sample_files(self, index: int) -> tuple[Path, ...]:
        return (self.samples[index][0],)

    def _item(self, index: int, seed: int | None):
        decoded = self.decoded(index)
        if isinstance(decoded, CorruptSample):
            return decoded
        pixels = decoded[0]
        if self.transform is not None:
            pixels = _transform(self.transform, seed, image=pixels)["image"]
        return torch.from_numpy(np.ascontiguousarray(pixels)), self.samples[index][1]


class MultiLabelDataset(ClassificationDataset):
    """``ROOT/<split>/images`` with ``labels.csv`` -> (``H x W x 3`` uint8 tensor, float32
    multi-hot vector of the tags, in ``classes`` order).

    Args:
        classes: the tags, in the order of the model's outputs (default: the train split's,
            sorted). Other arguments as for ``ClassificationDataset`` (``split`` is a name).
    """

    def __init__(self, root: "Path | DatasetIndex", split: str = "train", transform: Any = None, classes: list[str] | None = None, decode_side: int | None = None) -> None:
        index = DatasetIndex.of(root)
        self.root = index.root
        self.classes = classes or index.class_names()
        self.class_to_index = {name: i for i, name in enumerate(self.classes)}
        self.samples = index.multilabel_samples(split, self.classes)
        self.transform = transform
        self.decoder = ImageDecoder(decode_side)

    def _item(self, index: int, seed: int | None):
        item = super()._item(index, seed)
        if isinstance(item, CorruptSample):
            return item
        target = torch.zeros(len(self.classes), dtype=torch.float32)
        target[list(item[1])] = 1.0
        return item[0], target


def load_mask(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A mask's ids as ``H x W`` int64, read without a class table (see
    ``prep.masks.read.mask_ids``); 0/255 masks become 0/1."""
    from prep.masks.read import mask_ids

    return mask_ids(Path(path), size=size)


class SegmentationDataset(_Decoded, _SeedsOncePerBatch, torch.utils.data.Dataset):
    """``ROOT/<split>/images|masks`` -> (``H x W x 3`` uint8 tensor, ``H x W`` int64 class indices).

    Images without a mask are left out. A mask of another size than its decoded image (an
    image brought down to ``decode_side``, a mask saved at half size) is read at the
    image's size, nearest-neighbour (``decode_mask`` is given the size).
    Other arguments as for ``ClassificationDataset``.

    Args:
        decode_mask: ``(mask file, (height, width))`` -> class indices of that size,
            ``IGNORE_INDEX`` for ignored pixels (default: the ids as stored, 0/255 read as
            0/1); the segmentation task passes a ``prep.masks.read.MaskDecoder`` for
            the dataset's classes.
    """

    accepts_sample_seeds = True  # see prep.data.sampling

    def __init__(self, root: "Path | DatasetIndex", split: str = "train", transform: Any = None, decode_side: int | None = None, decode_mask: Any = None) -> None:
        index = DatasetIndex.of(root)
        self.root = index.root
        self.samples, self.unpaired = index.segmentation_pairs(split)
        self.transform = transform
        self.decoder = ImageMaskDecoder(decode_side, decode_mask or load_mask)

    def __len__(self) -> int:
        return len(self.samples)

    def sample_files(self, index: int) -> tuple[Path, ...]:
        return tuple(self.samples[index])

    def _item(self, index: int, seed: int | None):
        from prep.masks.read import IGNORE_INDEX

        decoded = self.decoded(index)
        if isinstance(decoded, CorruptSample):
            return decoded
        pixels, mask = decoded
        sentinel = np.iinfo(mask.dtype).max
        if self.transform is not None:
            out = _transform(self.transform, seed, image=pixels, mask=mask)
            pixels, mask = out["image"], out["mask"]
        target = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
        target[target == sentinel] = IGNORE_INDEX
        return torch.from_numpy(np.ascontiguousarray(pixels)), target
