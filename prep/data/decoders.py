"""Decoders: a sample's files -> its pixels (and mask) before augmentation.

A dataset decodes through one of these, and the decoded cache (``prep.data.cache``) stores
what it returns and is keyed by its ``key``: two decoders with the same key give the same
arrays for the same files, so a cache built by one serves the other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from prep.images.decode import SHRINK_RESAMPLING, ImageDecodeError, load_rgb_at_side


class ImageDecoder:
    """Sample files ``(image,)`` -> ``(H x W x 3 uint8 pixels, None)``, the short side
    brought down to ``side`` (``prep.images.decode.load_rgb_at_side``). Picklable, for workers."""

    def __init__(self, side: int | None) -> None:
        self.side = side

    @property
    def key(self) -> str:
        """Everything but the files that decides what this decoder returns (for a cache)."""
        return f"rgb side={self.side} resampling={SHRINK_RESAMPLING}"

    def __call__(self, files: tuple[Path, ...]) -> tuple[np.ndarray, None]:
        return load_rgb_at_side(files[0], self.side), None


class ImageMaskDecoder(ImageDecoder):
    """Sample files ``(image, mask)`` -> ``(pixels, H x W mask)``: the image as for
    ``ImageDecoder``, the mask read at the image's size by ``decode_mask`` and stored small,
    in ``mask_dtype``, with the ignored pixels at the type's largest value."""

    def __init__(self, side: int | None, decode_mask: Any) -> None:
        super().__init__(side)
        self.decode_mask = decode_mask

    @property
    def key(self) -> str:
        return f"{super().key} masks={describe(self.decode_mask)}"

    @property
    def mask_dtype(self) -> np.dtype:
        """One type for every mask: uint8 while the classes and the ignore value fit in it
        (a ``MaskDecoder`` of fewer than 255 classes), else uint16 (masks read as stored)."""
        mapping = getattr(self.decode_mask, "mapping", None)
        classes = len(mapping.ids) if mapping is not None else None
        return np.dtype(np.uint8 if classes is not None and classes < 255 else np.uint16)

    def __call__(self, files: tuple[Path, ...]) -> tuple[np.ndarray, np.ndarray]:
        from prep.masks.read import IGNORE_INDEX

        pixels = load_rgb_at_side(files[0], self.side)
        try:
            mask = self.decode_mask(files[1], pixels.shape[:2])
        except (OSError, ValueError) as exc:
            raise ImageDecodeError(f"{files[1]}: {exc}") from None
        # Augmentations resize masks with OpenCV, which takes 8- and 16-bit masks; the ignore
        # value travels as the largest value of the type.
        small = self.mask_dtype
        return pixels, np.where(mask == IGNORE_INDEX, np.iinfo(small).max, mask).astype(small)


def describe(value: Any) -> str:
    """A stable description of a decoding setting, for cache keys: a function's name, or an
    object's class and state."""
    if callable(value) and hasattr(value, "__qualname__"):  # a function
        return f"{value.__module__}.{value.__qualname__}"
    state = ", ".join(f"{k}={v!r}" for k, v in sorted(vars(value).items())) if hasattr(value, "__dict__") else repr(value)
    return f"{type(value).__module__}.{type(value).__qualname__}({state})"
