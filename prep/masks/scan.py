"""What the masks of a whole dataset hold: the ids in them, the classes those make, and what
stands in the way of training on them.

One pass reads every mask once (``scan_masks``, in parallel): the ids as training reads them
(``prep.masks.read``), which the classes come from (``classes_of``), and the values as the
files store them, before any reading as ids, which ``prep stats`` audits
(``StoredValues``, ``prep.stats.mask_audit``). Training, evaluation and ``prep stats`` share
one scan of a dataset (``prep.data.index.DatasetIndex.mask_scan``).
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
from prep.masks.read import ClassMapping, describe_ids, ids_of_image

# The modes whose stored values the audit counts: one channel, read as they are.
_SINGLE_CHANNEL = ("L", "P", "1", "I;16", "I")
# Without a class table, ids are 0 to the largest found: beyond this, they are not class ids
# (a 16-bit mask's values would ask for a 65,536-class model, and gigabytes).
MOST_IDS_WITHOUT_TABLE = 255


@dataclass
class StoredValues:
    """The values masks store, read without colour conversion or the 0/255 rule; combine
    with ``+``.

    Attributes:
        pixels_per_value: value -> pixels, over the single-channel masks.
        masks: single-channel masks read.
        not_single_channel: masks of other modes (colour, with alpha ...), not counted.
        failed: ``{file, reason}`` for each mask whose values could not be read.
    """

    pixels_per_value: Counter = field(default_factory=Counter)
    masks: int = 0
    not_single_channel: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)

    def __add__(self, other: "StoredValues") -> "StoredValues":
        return StoredValues(
            self.pixels_per_value + other.pixels_per_value, self.masks + other.masks,
            self.not_single_channel + other.not_single_channel, self.failed + other.failed,
        )

    def add(self, image, path: str) -> None:
        """Count the values of an opened mask image."""
        if image.mode not in _SINGLE_CHANNEL:
            self.not_single_channel.append(path)
            return
        try:
            values = np.asarray(image).astype(np.int64).ravel()
        except (OSError, ValueError) as exc:
            self.failed.append({"file": path, "reason": str(exc)})
            return
        # Not bincount: a negative value is an error there, and 2**31 an allocation of 16 GB.
        found, counts = np.unique(values, return_counts=True)
        self.pixels_per_value.update(dict(zip(found.tolist(), counts.tolist())))
        self.masks += 1


@dataclass
class MaskScan:
    """The ids found over a set of masks; scans of chunks add up with ``+``.

    Attributes:
        pixels: id -> pixels with that id, over every mask read.
        files_with: id -> up to three files holding it (to name them in messages).
        masks: masks read.
        failed: ``{file, reason}`` for each mask that could not be read.
        stored: the values as the files store them (for ``prep stats``' audit).
        per_mask: each mask read (its path) -> id -> pixels: which classes each split
            holds, and which images hold a rare class.
    """

    pixels: Counter = field(default_factory=Counter)
    files_with: dict[int, list[str]] = field(default_factory=dict)
    masks: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    stored: StoredValues = field(default_factory=StoredValues)
    per_mask: dict[str, dict[int, int]] = field(default_factory=dict)

    def pixels_of(self, masks: Sequence[str]) -> Counter:
        """id -> pixels over some of the masks read (one split's)."""
        total: Counter = Counter()
        for mask in masks:
            total.update(self.per_mask.get(mask, {}))
        return total

    def __add__(self, other: "MaskScan") -> "MaskScan":
        files = {k: list(v) for k, v in self.files_with.items()}
        for value, paths in other.files_with.items():
            files[value] = (files.get(value, []) + paths)[:3]
        return MaskScan(
            self.pixels + other.pixels, files, self.masks + other.masks, self.failed + other.failed, self.stored + other.stored,
            {**self.per_mask, **other.per_mask},
        )


def scan_masks(paths: Sequence[str], table: ClassTable | None) -> MaskScan:
    """Read each mask once: count its ids, and the values it stores (a worker's job: see
    ``prep.util.parallel``)."""
    from PIL import Image

    scan = MaskScan()
    for path in paths:
        try:
            image = Image.open(path)
        except (OSError, ValueError) as exc:
            scan.failed.append({"file": path, "reason": str(exc)})
            scan.stored.failed.append({"file": path, "reason": str(exc)})
            continue
        with image:
            scan.stored.add(image, path)
            try:
                ids = ids_of_image(image, table, Path(path))
            except (MaskError, OSError, ValueError) as exc:
                scan.failed.append({"file": path, "reason": str(exc)})
                continue
        if ids.size and 0 <= ids.min() and ids.max() < 65536:
            per_value = np.bincount(ids.ravel())  # linear time; np.unique sorts
            values = np.flatnonzero(per_value)
            counts = per_value[values]
        else:
            values, counts = np.unique(ids, return_counts=True)
        scan.per_mask[path] = dict(zip(values.tolist(), counts.tolist()))
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
    if largest > MOST_IDS_WITHOUT_TABLE:
        raise MaskError(
            f"Masks hold the value {largest} (in {scan.files_with[largest][0]}): read as class ids, that is "
            f"{largest + 1} classes. Say what the values are in a class table (classes.csv: id,name[,r,g,b]): "
            f"prep split --classes FILE"
        )
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
    where = f"the classes of {table.source} ({describe_ids(mapping)})" if table is not None else f"the classes ({describe_ids(mapping)})"
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


def scan_dataset_masks(masks: Sequence[str], table: ClassTable | None, workers: int | None = None, progress: Progress = NO_PROGRESS) -> MaskScan:
    """Read every mask of ``masks`` once, in parallel (see ``scan_masks``)."""
    import os

    from prep.util.parallel import map_chunks

    with progress.task("Reading masks", len(masks)) as advance:
        parts = map_chunks(scan_masks, list(masks), table, chunk_size=32, workers=workers or os.cpu_count() or 1, min_items=64, advance=advance)
    return sum(parts, MaskScan())


def classes_of(scan: MaskScan, table: ClassTable | None) -> DatasetClasses:
    """The classes a dataset's masks make (with its class table, if it has one): what
    training, evaluation and ``prep stats`` all rely on.

    Raises:
        MaskError: unreadable masks, or ids that are no class (files and values named).
    """
    mapping = mapping_for(table, scan)
    check_mask_ids(scan, mapping, table)
    return DatasetClasses(table, mapping, class_names(table, mapping), scan)
