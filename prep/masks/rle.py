"""Kaggle's run-length encoding of binary masks (Carvana's ``img,rle_mask``).

Pixels are numbered from 1, row by row (``order="row"``, Carvana's: left to right, then top
to bottom) or column by column (``order="column"``: top to bottom, then left to right, as
in competitions such as TGS Salt and Airbus Ship Detection). A mask is written as
``start length`` pairs of its runs of foreground pixels, separated by spaces; an empty mask
is the empty string.
"""

from __future__ import annotations

import numpy as np

from prep.errors import UsageError

ORDERS = ("row", "column")


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise UsageError(f"--rle-order must be row or column, not {order!r}")


def rle_encode(mask: np.ndarray, order: str = "row") -> str:
    """The run-length encoding of a binary ``H x W`` mask (non-zero is foreground)."""
    _check_order(order)
    pixels = np.asarray(mask).astype(bool).ravel(order="C" if order == "row" else "F")
    padded = np.concatenate([[False], pixels, [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1]) + 1  # 1-based starts and ends
    starts, ends = changes[::2], changes[1::2]
    return " ".join(f"{s} {e - s}" for s, e in zip(starts.tolist(), ends.tolist()))


def rle_decode(text: str, shape: tuple[int, int], order: str = "row") -> np.ndarray:
    """The binary ``H x W`` mask (uint8 0/1) that ``text`` encodes.

    Raises:
        UsageError: an odd number of values, or a run outside the image.
    """
    _check_order(order)
    height, width = shape
    flat = np.zeros(height * width, dtype=np.uint8)
    values = [int(v) for v in text.split()]
    if len(values) % 2:
        raise UsageError(f"A run-length encoding has start/length pairs; this one has {len(values)} numbers")
    for start, length in zip(values[::2], values[1::2]):
        if start < 1 or length < 0 or start - 1 + length > flat.size:
            raise UsageError(f"The run {start} {length} lies outside a {height} x {width} image")
        flat[start - 1 : start - 1 + length] = 1
    return flat.reshape((height, width), order="C" if order == "row" else "F")
