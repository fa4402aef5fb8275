"""How many pixels training needs from each image: the short side to decode to.

A Kaggle photo of 1600 x 1200 pixels trained at 224 spends most of its decoding time on
pixels that the first resize throws away. The first transform of a pipeline says how many
are needed, so images are decoded (and cached) with their short side brought down to:

* ``SmallestMaxSize(m)``, ``LongestMaxSize(m)``: ``m``, what the transform resizes to;
* ``Resize(h, w)``: ``max(h, w)``, so that neither side is stretched;
* ``RandomResizedCrop((h, w), scale=(s, 1))``: enough for its smallest crop to keep every
  pixel, ``max(h, w) / sqrt(s)``, but at most ``CROP_DETAIL`` times ``max(h, w)``;
* anything else (a plain ``RandomCrop``, a plugin's own first step): full resolution,
  since shrinking first would change what that transform sees.

The pipeline then runs on the smaller image exactly as it would have on the full one.
"""

from __future__ import annotations

import math
from typing import Any

# The most a cropping pipeline keeps, as a multiple of the training size. Light's smallest
# crop (a quarter of the image) keeps all its pixels at 2; medium's and heavy's (0.15) are
# upscaled by at most 1.3 from there, against a cache 60% larger for 2.6.
CROP_DETAIL = 2.0


def _first_transform(transform: Any) -> Any:
    """The first transform a pipeline applies, looking inside nested composes."""
    while True:
        inner = getattr(transform, "transforms", None)
        if not inner:
            return transform
        transform = inner[0]


def _side_of(size: Any) -> int:
    return max(size) if isinstance(size, (tuple, list)) else int(size)


def source_side(transform: Any) -> int | None:
    """The short side to decode images to for ``transform`` (an albumentations pipeline, or
    None for none), or None for full resolution (see the module docstring)."""
    import albumentations as A

    first = _first_transform(transform) if transform is not None else None
    if isinstance(first, (A.SmallestMaxSize, A.LongestMaxSize)) and first.max_size is not None:
        return _side_of(first.max_size)
    if isinstance(first, A.Resize):
        return max(first.height, first.width)
    if isinstance(first, A.RandomResizedCrop):
        out = _side_of(first.size)
        smallest = max(min(first.scale), 1e-6)
        return math.ceil(min(out / math.sqrt(smallest), CROP_DETAIL * out))
    return None
