"""Reading segmentation masks as class indices, whatever way they were saved.

A mask's *ids* are what it stores for each pixel, read without colour conversion:

* a grey (``L``, ``I;16``, ``I``) or class-id PNG: its values;
* a palette PNG or GIF (Carvana ships GIFs): its palette indices;
* a 1-bit or boolean mask: 0 and 1;
* a colour-coded RGB mask: the id of each colour in the class table (``r,g,b`` columns);
  an RGB mask whose three channels are equal is read as grey;
* a binary mask saved as 0/255: 0 and 1 (unless the class table gives 255 a meaning).

The classes are then the class table's ids, in order (or, without a table, the ids 0 to the
largest one found), and a mask becomes class *indices*: the position of each id among the
classes, with the table's ``ignore`` value as ``IGNORE_INDEX``. An id that is no class stops
everything with the files and values named (``check_mask_ids``): a 255 taken for a class, or
a class id beyond the model's outputs, fails silently or with a device-side assert elsewhere.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from prep.errors import MaskError
from prep.util.progress import NO_PROGRESS, Progress
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
    meaningful_255 = table is not None and (255 in table.ids or table.ignore == 255)
    if not meaningful_255 and ids.max(initial=0) == 255 and np.isin(ids, (0, 255)).all():
        ids //= 255  # a binary mask saved for viewing
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
    return f"{path} holds the value{'s' if len(bad) != 1 else ''} {', '.join(map(str, bad[:5]))}, which {'are' if len(bad) != 1 else 'is'} not among the classes ({_describe_ids(mapping)})"


def _describe_ids(mapping: ClassMapping) -> str:
    ids = list(mapping.ids)
    text = f"ids {ids[0]} to {ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else f"ids {', '.join(map(str, ids[:12]))}"
    return text + (f", {mapping.ignore} ignored" if mapping.ignore is not None else "")


class MaskDecoder:
    """A mask file -> ``H x W`` class indices, for datasets (picklable for loader workers)."""

    def __init__(self, table: ClassTable | None, mapping: ClassMapping) -> None:
        self.table, self.mapping = table, mapping

    def __call__(self, path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
        return self.mapping.indices(mask_ids(path, self.table, size), path)


@dataclass
class MaskScan:
    """The ids found over a set of masks; scans of chunks add up with ``+``.

    Attributes:
        pixels: id -> pixels with that id, over every mask read.
        files_with: id -> up to three files holding it (to name them in messages).
        masks: masks read.
        failed: ``{file, reason}`` for each mask that could not be read.
    """

    pixels: Counter = field(default_factory=Counter)
    files_with: dict[int, list[str]] = field(default_factory=dict)
    masks: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)

    def __add__(self, other: "MaskScan") -> "MaskScan":
        files = {k: list(v) for k, v in self.files_with.items()}
        for value, paths in other.files_with.items():
            files[value] = (files.get(value, []) + paths)[:3]
        return MaskScan(self.pixels + other.pixels, files, self.masks + other.masks, self.failed + other.failed)


def scan_masks(paths: Sequence[str], table: ClassTable | None) -> MaskScan:
    """Read each mask's ids and count them (a worker's job: see ``prep.util.parallel``)."""
    scan = MaskScan()
    for path in paths:
        try:
            ids = mask_ids(Path(path), table)
        except (MaskError, OSError, ValueError) as exc:
            scan.failed.append({"file": path, "reason": str(exc)})
            continue
        if ids.size and 0 <= ids.min() and ids.max() < 65536:
            per_value = np.bincount(ids.ravel())  # linear time; np.unique sorts
            values = np.flatnonzero(per_value)
            counts = per_value[values]
        else:
            values, counts = np.unique(ids, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist()):
            scan.pixels[value] += count
            holders = scan.files_with.setdefault(value, [])
            if len(holders) < 3:
                holders.append(path)
        scan.masks += 1
    return scan


def mapping_for(table: ClassTable | None, scan: MaskScan) -> ClassMapping:
    """The classes: the table's ids, or without a table the ids 0 to the largest one found
    (at least 0 and 1: a binary segmentation).

    Raises:
        MaskError: no table, and 255 beside other ids (255 is then "ignore" or a viewing
            value, never 256 classes).
    """
    if table is not None:
        return ClassMapping(table.ids, table.ignore)
    largest = max(scan.pixels, default=1)
    if largest == 255 and len(scan.pixels) > 2:
        # 0/1/255 (or more ids beside 255): 255 is almost always "ignore" or a viewing value.
        others = sorted(v for v in scan.pixels if v != 255)
        raise MaskError(
            f"Masks hold the values {', '.join(map(str, others[:6]))} and 255 (in {scan.files_with[255][0]}); "
            f"say what they are in a class table (classes.csv: id,name[,r,g,b], with the row 255,ignore if 255 "
            f"marks pixels to ignore): prep split --classes FILE"
        )
    return ClassMapping(tuple(range(max(largest, 1) + 1)))


def class_names(table: ClassTable | None, mapping: ClassMapping) -> list[str]:
    """The table's names, else ``background``/``foreground`` for two classes and
    ``class_0``, ``class_1`` ... for more."""
    if table is not None:
        return list(table.names)
    if len(mapping.ids) == 2:
        return ["background", "foreground"]
    return [f"class_{i}" for i in mapping.ids]


def check_mask_ids(scan: MaskScan, mapping: ClassMapping, table: ClassTable | None) -> None:
    """Stop on masks that cannot be read or hold ids that are no class, naming files and values.

    Raises:
        MaskError: the first few offending files and values, with what to do.
    """
    if scan.failed:
        first = scan.failed[0]
        more = f" (and {len(scan.failed) - 1} more)" if len(scan.failed) > 1 else ""
        raise MaskError(f"Cannot read the mask {first['file']}{more}: {first['reason']}")
    allowed = set(mapping.ids) | ({mapping.ignore} if mapping.ignore is not None else set())
    bad = sorted(v for v in scan.pixels if v not in allowed)
    if not bad:
        return
    examples = "; ".join(f"{v} in {', '.join(scan.files_with[v][:2])}" for v in bad[:3])
    where = f"the classes of {table.source} ({_describe_ids(mapping)})" if table is not None else f"the classes ({_describe_ids(mapping)})"
    advice = (
        "; if 255 marks pixels to ignore, add the row 255,ignore to the class table"
        if 255 in bad else "; list every class in the class table (classes.csv: id,name[,r,g,b])"
    )
    raise MaskError(f"Masks hold values that are not {where}: {examples}{advice}.")


@dataclass(frozen=True)
class DatasetClasses:
    """What the masks of one split dataset hold: its class table (or None), the mapping of
    mask ids to classes, the class names and the scan (pixels per id)."""

    table: ClassTable | None
    mapping: ClassMapping
    names: list[str]
    scan: MaskScan


def read_dataset_classes(root: Path, workers: int | None = None, progress: Progress = NO_PROGRESS) -> DatasetClasses:
    """Read every mask of every split of ``root`` once (in parallel) and work out its
    classes: what training, evaluation and ``prep stats`` all rely on.

    Raises:
        MaskError: unreadable masks, or ids that are no class (files and values named).
        ClassTableError: a malformed ``classes.csv``.
    """
    import os

    from prep.data.index import find_split_dirs, segmentation_pairs
    from prep.util.parallel import map_chunks
    from prep.masks.class_table import dataset_class_table

    table = dataset_class_table(root)
    masks = [str(mask) for folder in find_split_dirs(root).values() for _, mask in segmentation_pairs(folder)[0]]
    with progress.task("Reading masks", len(masks)) as advance:
        parts = map_chunks(scan_masks, masks, table, chunk_size=32, workers=workers or os.cpu_count() or 1, min_items=64, advance=advance)
    scan = sum(parts, MaskScan())
    mapping = mapping_for(table, scan)
    check_mask_ids(scan, mapping, table)
    return DatasetClasses(table, mapping, class_names(table, mapping), scan)
