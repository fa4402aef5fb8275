"""Reading a segmentation mask as class indices, whatever way it was saved.

A mask's *ids* are what it stores for each pixel, read without colour conversion:

* a grey (``L``, ``I;16``, ``I``) or class-id PNG: its values;
* a palette PNG or GIF (Carvana ships GIFs): its palette indices;
* a 1-bit or boolean mask: 0 and 1;
* a colour-coded RGB mask: the id of each colour in the class table (``r,g,b`` columns);
  an RGB mask whose three channels are equal is read as grey;
* a binary mask saved as 0/255, or as 16-bit 0/65535: 0 and 1 (unless the class table gives
  255, or 65535, a meaning).

The classes are then the class table's ids, in order (or, without a table, the ids 0 to the
largest one found), and a mask becomes class *indices*: the position of each id among the
classes, with the table's ``ignore`` value as ``IGNORE_INDEX``. An id that is no class stops
everything with the files and values named (``prep.masks.scan.check_mask_ids``): a 255 taken
for a class, or a class id beyond the model's outputs, fails silently or with a device-side
assert elsewhere. What a whole dataset's masks hold is ``prep.masks.scan``'s part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from prep.errors import MaskError
from prep.masks.class_table import ClassTable

# What an ignored pixel becomes in a target: cross-entropy's default ignore_index.
IGNORE_INDEX = -100

_GREY_MODES = ("L", "P", "I;16", "I;16L", "I;16B", "I", "1")


def _colour_keys(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]


def _ids_of_colours(rgb: np.ndarray, table: ClassTable, path: Path) -> np.ndarray:
    colours = list(table.colours or ())
    ids = list(table.ids)
    if table.ignore is not None and table.ignore_colour is not None:
        colours.append(table.ignore_colour)
        ids.append(table.ignore)
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colours], dtype=np.int64)
    order = np.argsort(keys)
    keys, ids_sorted = keys[order], np.array(ids, dtype=np.int64)[order]
    pixels = _colour_keys(rgb)
    where = np.clip(np.searchsorted(keys, pixels), 0, len(keys) - 1)
    known = keys[where] == pixels
    if not known.all():
        unknown, counts = np.unique(pixels[~known], return_counts=True)
        shown = ", ".join(f"({k >> 16},{(k >> 8) & 255},{k & 255}) x{c}" for k, c in sorted(zip(unknown.tolist(), counts.tolist()), key=lambda kc: -kc[1])[:3])
        raise MaskError(
            f"{path} has {len(unknown)} colour{'s' if len(unknown) != 1 else ''} that {table.source} does not list, "
            f"such as {shown} (pixels); a colour mask must be saved as PNG (JPEG changes colours) with the table's exact colours"
        )
    return ids_sorted[where]


def mask_ids(path: Path, table: ClassTable | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
    """The ids of a mask file as an ``H x W`` int64 array (see the module docstring),
    resized nearest-neighbour to ``size`` (height, width) when given: before anything else,
    which spares converting a Carvana-sized mask whose image is decoded at a fraction of it.

    Raises:
        MaskError: a colour mask without table colours, or with a colour the table lacks.
        OSError, ValueError: the file cannot be read as an image.
    """
    from PIL import Image

    with Image.open(path) as image:
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.NEAREST)  # keeps palette indices and colours exact
        return ids_of_image(image, table, path)


def ids_of_image(image, table: ClassTable | None, path: Path) -> np.ndarray:
    """The ids of an opened mask image (a Pillow ``Image``), as ``mask_ids`` reads them."""
    mode = image.mode
    if mode in _GREY_MODES:
        ids = np.asarray(image).astype(np.int64)
    elif mode in ("LA", "PA"):
        ids = np.asarray(image.getchannel(0)).astype(np.int64)
    else:
        rgb = np.asarray(image.convert("RGB"))
        if table is not None and table.colours is not None:
            return _ids_of_colours(rgb, table, path)
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            colours = len(np.unique(_colour_keys(rgb)))
            raise MaskError(
                f"{path} is a colour-coded mask ({colours} colours); give a class table with r,g,b columns "
                f"(classes.csv: id,name,r,g,b) to decode it: prep split --classes FILE"
            )
        ids = rgb[..., 0].astype(np.int64)
    for full in (255, 65535):  # 8-bit and 16-bit binary masks saved for viewing
        meaningful = table is not None and (full in table.ids or table.ignore == full)
        if not meaningful and ids.max(initial=0) == full and np.isin(ids, (0, full)).all():
            ids //= full
            break
    return ids


@dataclass(frozen=True)
class ClassMapping:
    """Mask ids -> class indices: ``ids[i]`` is class ``i``; ``ignore`` becomes ``IGNORE_INDEX``."""

    ids: tuple[int, ...]
    ignore: int | None = None

    def indices(self, ids: np.ndarray, path: Path) -> np.ndarray:
        """``ids`` as class indices (int64).

        Raises:
            MaskError: an id that is neither a class nor the ignore value.
        """
        if self.ids == tuple(range(len(self.ids))) and self.ignore is None:
            if ids.size and (ids.min() < 0 or ids.max() >= len(self.ids)):
                raise MaskError(_out_of_range_message(path, ids, self))
            return ids
        known = np.array(self.ids, dtype=np.int64)
        where = np.clip(np.searchsorted(known, ids), 0, len(known) - 1)
        found = known[where] == ids
        ignored = ids == self.ignore if self.ignore is not None else np.zeros(ids.shape, dtype=bool)
        if not (found | ignored).all():
            raise MaskError(_out_of_range_message(path, ids, self))
        return np.where(ignored, IGNORE_INDEX, where)


def _out_of_range_message(path: Path, ids: np.ndarray, mapping: ClassMapping) -> str:
    allowed = set(mapping.ids) | ({mapping.ignore} if mapping.ignore is not None else set())
    bad = sorted(set(np.unique(ids).tolist()) - allowed)
    return f"{path} holds the value{'s' if len(bad) != 1 else ''} {', '.join(map(str, bad[:5]))}, which {'are' if len(bad) != 1 else 'is'} not among the classes ({describe_ids(mapping)})"


def describe_ids(mapping: ClassMapping) -> str:
    ids = list(mapping.ids)
    text = f"ids {ids[0]} to {ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else f"ids {', '.join(map(str, ids[:12]))}"
    return text + (f", {mapping.ignore} ignored" if mapping.ignore is not None else "")


class MaskDecoder:
    """A mask file -> ``H x W`` class indices, for datasets (picklable for loader workers)."""

    def __init__(self, table: ClassTable | None, mapping: ClassMapping) -> None:
        self.table, self.mapping = table, mapping

    def __call__(self, path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
        return self.mapping.indices(mask_ids(path, self.table, size), path)
