"""Writing predicted masks: PNG files at the images' own size, or a Kaggle RLE submission.

A binary model's masks are grey PNGs of 0 and 255 (viewable, and read back by prep as
0/1). A multiclass model's are palette PNGs whose values are the class table's ids and
whose palette is its colours (else a fixed palette), so that any viewer shows them in
colour and prep reads them back as the same classes; ids above 255 are written as 16-bit
grey PNGs.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from prep.errors import TargetExistsError, UsageError
from prep.util.files import atomic_write_bytes
from prep.masks.rle import rle_encode

SUBMISSION_NEEDS_BINARY = "--kaggle-submission writes one run-length-encoded mask per image, which needs a binary (two-class) model"


def mask_image(indices: np.ndarray, ids: Sequence[int], colours: np.ndarray):
    """The PIL image of a predicted mask (see the module docstring)."""
    from PIL import Image

    if tuple(ids) == (0, 1):
        return Image.fromarray((indices > 0).astype(np.uint8) * 255, "L")
    values = np.asarray(ids, dtype=np.int64)[indices]
    if max(ids) > 255:
        return Image.fromarray(values.astype(np.uint16), "I;16")
    image = Image.fromarray(values.astype(np.uint8), "P")
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[list(ids)] = colours[: len(ids)]
    image.putpalette(palette.ravel().tolist())
    return image


def mask_destinations(files: Sequence[Path], inputs: Sequence[Path], out: Path) -> dict[Path, Path]:
    """Where each image's mask goes: ``out/<path under its input folder>.png`` (or
    ``out/<name>.png`` for an image given by name).

    Raises:
        TargetExistsError: a destination exists already (nothing is ever replaced), or two
            images would write the same mask.
    """
    destinations: dict[Path, Path] = {}
    taken: dict[Path, Path] = {}
    folders = [i.resolve() for i in inputs if i.is_dir()]
    for file in files:
        resolved = file.resolve()
        base = next((f for f in folders if resolved.is_relative_to(f)), None)
        relative = resolved.relative_to(base) if base is not None else Path(file.name)
        target = out / relative.with_suffix(".png")
        if target in taken:
            raise TargetExistsError(f"{file} and {taken[target]} would both write {target}; predict them into separate --out folders")
        if target.exists():
            raise TargetExistsError(f"{target} already exists; choose an empty --out folder (prep never replaces a file)")
        taken[target] = file
        destinations[file] = target
    return destinations


def write_mask(path: Path, indices: np.ndarray, ids: Sequence[int], colours: np.ndarray) -> None:
    """Write one mask PNG whole or not at all."""
    buffer = io.BytesIO()
    mask_image(indices, ids, colours).save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue(), durable=False)


def write_submission(path: Path, masks: Iterable[tuple[Path, np.ndarray]], binary: bool, order: str = "row") -> int:
    """Kaggle's ``img,rle_mask`` CSV (Carvana's format; see ``prep.masks.rle``): one
    row per image, named by file name; returns the rows written.

    Raises:
        UsageError: the model is not binary (one run-length mask per image needs one class).
    """
    if not binary:
        raise UsageError(SUBMISSION_NEEDS_BINARY)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["img", "rle_mask"])
    rows = 0
    for file, indices in masks:
        writer.writerow([file.name, rle_encode(indices > 0, order)])
        rows += 1
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.getvalue().encode("utf-8", "surrogateescape"))  # a file name that is not UTF-8 keeps its bytes
    return rows
