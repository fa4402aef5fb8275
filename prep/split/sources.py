"""Recognising how a raw dataset folder is laid out, and listing its labeled samples.

Layouts, tried in this order:

1. ``segmentation``: an images folder and a masks folder paired by name (``--masks``, or
   found automatically as ``train/`` + ``train_masks/`` or ``images/`` + ``masks/``).
2. ``csv-labels``: a Kaggle label CSV (``--labels``) naming files by id; ``multilabel-csv``
   when its label cells hold several tags (Planet's ``image_name,tags``, the Human Protein
   Atlas's ``Id,Target``; see ``multi_label_separator``).
3. ``class-folders``: ``SRC/Cat/1.jpg`` (also under ``train/`` or Microsoft's ``PetImages/``).
4. ``filename-labels``: Kaggle's flat ``SRC/train/cat.0.jpg`` or ``SRC/cat.0.jpg``.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from prep.errors import LabelsFileError, LayoutError
from prep.layout import REJECTED_DIR, SPLITS, canonical_split_name, is_image_name, is_junk
from prep.split.label_parsers import LabelParser
from prep.split.safe_names import sanitize_class_name

# Kaggle ships its unlabeled images as test/, test1/, test2/ beside the labeled ones.
UNLABELED_FOLDER = re.compile(r"^test\d*$", re.IGNORECASE)


class Sample(NamedTuple):
    """One labeled image (and its mask, for segmentation), relative to the source root."""

    rel: str
    label: str | None
    mask_rel: str | None = None


@dataclass
class Inventory:
    """What a source folder holds, as prep understood it."""

    layout: str
    description: str
    samples: list[Sample]
    unlabeled: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # junk and non-image files
    missing: list[str] = field(default_factory=list)  # CSV ids or masks with no image


@dataclass(frozen=True)
class LayoutOptions:
    """How to read labels; every field is optional and auto-detected when left out."""

    label_parser: LabelParser | None = None
    labels_csv: Path | None = None
    id_column: str | None = None
    label_column: str | None = None
    masks: Path | None = None
    mask_suffix: str = "_mask"
    multi_label: bool | None = None  # None: decided from the label CSV's cells
    tag_separator: str | None = None  # None: found in the cells


MULTILABEL_CSV = "multilabel-csv"
# The separators a multi-label cell is looked for with, when --tag-separator is not given.
TAG_SEPARATORS = (" ", ";", "|", ",")


def _walk(root: Path, base: Path, skip: set[Path], ignored: list[str]) -> list[str]:
    """Image files under ``root`` as paths relative to ``base``, sorted; junk is skipped."""
    found: list[str] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            raise LayoutError(f"Cannot read folder {folder}: {exc.strerror}") from None
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                path = Path(entry.path)
                if not is_junk(entry.name, is_dir=True) and path not in skip:
                    stack.append(path)
            elif is_junk(entry.name) or not is_image_name(entry.name):
                ignored.append(os.path.relpath(entry.path, base))
            else:
                found.append(os.path.relpath(entry.path, base))
    return sorted(found)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(
        Path(e.path) for e in os.scandir(folder)
        if e.is_dir(follow_symlinks=False) and not is_junk(e.name, is_dir=True)
        and e.name != REJECTED_DIR
    )


def _has_images(folder: Path) -> bool:
    # Not e.is_file(): it follows symlinks, and a link to itself raises ELOOP. Anything that
    # is not a folder counts, as in _walk; the image check later rejects what cannot be read.
    return any(not e.is_dir(follow_symlinks=False) and not is_junk(e.name) and is_image_name(e.name) for e in os.scandir(folder))


def _as_posix(rel: str) -> str:
    return rel.replace(os.sep, "/")


def _segmentation_folders(src: Path, options: LayoutOptions) -> tuple[Path, Path] | None:
    if options.masks is not None:
        masks = options.masks if options.masks.is_absolute() else Path.cwd() / options.masks
        if not masks.is_dir() and (src / options.masks).is_dir():
            masks = src / options.masks
        if not masks.is_dir():
            raise LayoutError(f"--masks {options.masks} is not a folder")
        images = src / "train" if (src / "train").is_dir() and masks.parent == src else src
        if (src / "images").is_dir() and masks.parent == src:
            images = src / "images"
        return images, masks.resolve()
    for images_name, masks_name in (("train", "train_masks"), ("images", "masks")):
        if (src / images_name).is_dir() and (src / masks_name).is_dir():
            return src / images_name, src / masks_name
    return None


def _discover_segmentation(src: Path, images: Path, masks: Path, options: LayoutOptions, skip: set[Path]) -> Inventory:
    ignored: list[str] = []
    image_rels = _walk(images, src, skip | {masks}, ignored)
    mask_rels = _walk(masks, src, skip, ignored)
    suffix = options.mask_suffix
    masks_by_stem: dict[str, str] = {}
    for rel in mask_rels:
        stem = Path(rel).stem
        if suffix and stem.endswith(suffix):
            stem = stem[: -len(suffix)]
        masks_by_stem[stem] = rel
    samples, unpaired = [], []
    for rel in image_rels:
        mask = masks_by_stem.pop(Path(rel).stem, None)
        if mask is None:
            unpaired.append(_as_posix(rel))
        else:
            samples.append(Sample(_as_posix(rel), None, _as_posix(mask)))
    return Inventory(
        "segmentation",
        f"segmentation pairs: images in {images}, masks in {masks} (mask suffix {suffix!r})",
        samples,
        unlabeled=unpaired,
        ignored=ignored,
        missing=sorted(_as_posix(m) for m in masks_by_stem.values()),
    )


def _read_csv_rows(path: Path, id_column: str | None, label_column: str | None) -> list[tuple[int, str, str]]:
    """(line, id, label cell) of every row of a label CSV."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.DictReader(file)
            columns = reader.fieldnames or []
            if id_column is None:
                id_column = "id" if "id" in columns else (columns[0] if columns else None)
            if label_column is None and len(columns) == 2:
                label_column = next(c for c in columns if c != id_column)
            for option, column in (("--id-column", id_column), ("--label-column", label_column)):
                if column is None or column not in columns:
                    raise LabelsFileError(
                        f"{path}: choose the column with {option}; the columns are {', '.join(columns) or 'none'}"
                    )
            rows = []
            for line, row in enumerate(reader, start=2):
                key, label = (row.get(id_column) or "").strip(), row.get(label_column)
                if not key or label is None:
                    raise LabelsFileError(f"{path} line {line}: missing {id_column!r} or {label_column!r}")
                rows.append((line, key, label))
            return rows
    except OSError as exc:
        raise LabelsFileError(f"Cannot read label file {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LabelsFileError(f"{path} is not a readable CSV file: {exc}") from None


def multi_label_separator(path: Path, rows: list[tuple[int, str, str]], multi_label: bool | None, separator: str | None) -> str | None:
    """The separator of a multi-label CSV's tags, or None for one class per row.

    ``--multi-label`` (``multi_label`` True) or ``--tag-separator`` says so; otherwise a CSV is
    multi-label when its cells hold one separator of ``TAG_SEPARATORS`` and most of its
    distinct cells with several parts are made of parts that other cells hold too (Planet's
    ``clear primary`` beside ``haze primary water``), which class names with spaces in them
    do not (``wheat`` of ``Common wheat`` is in no other class's name).

    Raises:
        LabelsFileError: cells that separate tags two ways (``a b`` on one line, ``c|d`` on
            another), so that the separator must be given.
    """
    if multi_label is False:
        return None
    if separator is not None:
        return separator
    first: dict[str, int] = {}
    for line, _, cell in rows:
        for candidate in TAG_SEPARATORS:
            if candidate in cell.strip():
                first.setdefault(candidate, line)
    if len(first) > 1:
        (a, line_a), (b, line_b) = sorted(first.items(), key=lambda kv: kv[1])[:2]
        raise LabelsFileError(
            f"{path}: line {line_a} separates its labels with {a!r} and line {line_b} with {b!r}; "
            f"say which separates tags with --tag-separator (or --single-label: one class per row)"
        )
    found = next(iter(first), None)
    if multi_label:
        return found or " "
    if found is None:
        return None
    cells = {cell.strip() for _, _, cell in rows}
    parts_of = {cell: {part.strip() for part in cell.split(found)} for cell in cells}
    cells_with = Counter(part for parts in parts_of.values() for part in parts)
    several = [parts for parts in parts_of.values() if len(parts) > 1]
    recurring = sum(all(cells_with[part] > 1 for part in parts) for parts in several)
    return found if several and 2 * recurring >= len(several) else None


def _tags(cell: str, separator: str, origin: str) -> str:
    """A multi-label cell as prep keeps it: its distinct tags, sorted, joined by spaces.

    Raises:
        LabelsFileError: no tags, an empty tag, or a tag holding a space (prep's
            ``labels.csv`` separates tags with spaces).
        UnsafeLabelError: a tag with a path separator or a control character.
    """
    from prep.layout import TAG_SEPARATOR

    text = cell.strip()
    if not text:
        raise LabelsFileError(f"{origin}: no tags")
    tags = set()
    for position, raw in enumerate(text.split(separator), start=1):
        tag = raw.strip()
        if not tag:
            raise LabelsFileError(f"{origin}: tag {position} of {cell!r} is empty (two separators {separator!r} in a row?)")
        if any(ch.isspace() for ch in tag):
            raise LabelsFileError(
                f"{origin}: the tag {tag!r} holds a space; prep's labels.csv separates tags with spaces, so rename it (such as {'_'.join(tag.split())!r})"
            )
        tags.add(sanitize_class_name(tag, origin, what="Tag"))
    return TAG_SEPARATOR.join(sorted(tags))


def read_label_csv(path: Path, options: LayoutOptions) -> tuple[dict[str, tuple[str, int]], str | None]:
    """Each id's label (a multi-label CSV's: its tags, see ``_tags``) and line, and the tag
    separator (None: one class per row)."""
    rows = _read_csv_rows(path, options.id_column, options.label_column)
    separator = multi_label_separator(path, rows, options.multi_label, options.tag_separator)
    labels: dict[str, tuple[str, int]] = {}
    for line, key, cell in rows:
        origin = f"{path} line {line}"
        label = sanitize_class_name(cell, origin) if separator is None else _tags(cell, separator, origin)
        if key in labels and labels[key][0] != label:
            what = "tagged" if separator is not None else "labeled"
            raise LabelsFileError(
                f"{path} line {line}: id {key!r} is {what} {label!r} here but "
                f"{labels[key][0]!r} on line {labels[key][1]}"
            )
        labels[key] = (label, line)
    return labels, separator


def _discover_csv(src: Path, options: LayoutOptions, skip: set[Path]) -> Inventory:
    assert options.labels_csv is not None
    csv_path = options.labels_csv
    if not csv_path.exists() and (src / csv_path).exists():
        csv_path = src / csv_path
    labels, separator = read_label_csv(csv_path, options)
    root = src / "train" if (src / "train").is_dir() else src
    ignored: list[str] = []
    samples, unlabeled, seen = [], [], set()
    for rel in _walk(root, src, skip, ignored):
        name = os.path.basename(rel)
        stem = os.path.splitext(name)[0]
        key = name if name in labels else stem if stem in labels else None
        if key is None:
            unlabeled.append(_as_posix(rel))
            continue
        if key in seen:
            raise LabelsFileError(f"{csv_path}: id {key!r} matches more than one file (another is {rel})")
        seen.add(key)
        samples.append(Sample(_as_posix(rel), labels[key][0]))
    if separator is not None:
        layout, description = MULTILABEL_CSV, f"multi-label: tags separated by {separator!r} in {csv_path}, for images in {root}"
    else:
        layout, description = "csv-labels", f"labels from {csv_path} for images in {root}"
    return Inventory(
        layout,
        description,
        samples,
        unlabeled=unlabeled,
        ignored=ignored,
        missing=sorted(set(labels) - seen),
    )


def _class_folders(src: Path, root: Path, skip: set[Path]) -> Inventory:
    ignored: list[str] = []
    samples, unlabeled = [], []
    for folder in _subdirs(root):
        if folder in skip:
            continue
        if UNLABELED_FOLDER.match(folder.name):
            unlabeled += [_as_posix(r) for r in _walk(folder, src, skip, ignored)]
            continue
        label = sanitize_class_name(folder.name, str(folder))
        samples += [Sample(_as_posix(rel), label) for rel in _walk(folder, src, skip, ignored)]
    # Loose images beside the class folders carry no label.
    unlabeled += [
        _as_posix(os.path.relpath(e.path, src)) for e in os.scandir(root)
        if not e.is_dir(follow_symlinks=False) and not is_junk(e.name) and is_image_name(e.name)
    ]
    return Inventory("class-folders", f"class folders in {root}", samples, unlabeled=sorted(unlabeled), ignored=ignored)


def _filename_labels(src: Path, root: Path, parser: LabelParser, skip: set[Path]) -> Inventory:
    ignored: list[str] = []
    samples, unlabeled = [], []
    prefix = "" if root == src else _as_posix(os.path.relpath(root, src)) + "/"
    safe_labels: dict[str, str] = {}  # a label is checked once, not once per file
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir(follow_symlinks=False) or is_junk(entry.name) or not is_image_name(entry.name):
            if not entry.is_dir(follow_symlinks=False):
                ignored.append(prefix + entry.name)
            continue
        rel = prefix + entry.name
        raw = parser(entry.name)
        if raw is None:
            unlabeled.append(rel)
            continue
        label = safe_labels.get(raw)
        if label is None:
            label = safe_labels[raw] = sanitize_class_name(raw, rel)
        samples.append(Sample(rel, label))
    return Inventory("filename-labels", f"Kaggle flat layout, labels from file names in {root}", samples, unlabeled=unlabeled, ignored=ignored)


def _count_unlabeled_siblings(src: Path, root: Path, inventory: Inventory, skip: set[Path]) -> None:
    """Kaggle's ``test1/`` beside ``train/``: left where it is, but counted."""
    if root == src:
        return
    for folder in _subdirs(src):
        if folder != root and folder not in skip:
            inventory.unlabeled += [_as_posix(r) for r in _walk(folder, src, skip, inventory.ignored)]


def discover(src: Path, options: LayoutOptions, skip: set[Path] = frozenset()) -> Inventory:
    """Work out the layout of ``src`` and list its samples (see ``_discover``).

    Raises:
        LayoutError: as ``_discover``; or a file name that is not UTF-8 text.
    """
    inventory = _discover(src, options, skip)
    _check_names_are_text(src, inventory)
    return inventory


def _check_names_are_text(src: Path, inventory: Inventory) -> None:
    """Refuse file names that are not UTF-8 (``caf\\xe9.jpg`` from a Latin-1 archive):
    the journal, the label files and the reports are UTF-8 text and cannot hold them, and
    a split that cannot record a file could not undo its move."""
    names = [s.rel for s in inventory.samples] + [s.mask_rel for s in inventory.samples if s.mask_rel]
    names += list(inventory.unlabeled) + list(inventory.ignored)
    bad = [name for name in names if not _is_text(name)]
    if bad:
        shown = os.fsencode(src / bad[0]).decode("utf-8", "backslashreplace")
        raise LayoutError(
            f"{len(bad)} file name{'s' if len(bad) > 1 else ''} under {src} {'are' if len(bad) > 1 else 'is'} "
            f"not UTF-8 text, which prep's journal and reports cannot record (the first: {shown}). Nothing was moved; "
            f"rename them, for example with: convmv -f latin1 -t utf8 -r --notest {src}"
        )


def _is_text(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # os.fsdecode's surrogates: bytes that are not UTF-8
        return False
    return True


def _discover(src: Path, options: LayoutOptions, skip: set[Path] = frozenset()) -> Inventory:
    """Work out the layout of ``src`` and list its samples.

    Args:
        src: the raw dataset folder.
        options: label sources given on the command line.
        skip: folders never to scan (the output folder when it lies inside ``src``).

    Raises:
        LayoutError: the folder does not exist, is already split, or holds no images.
        LabelsFileError, UnsafeLabelError: a label source is unusable.
    """
    if not src.is_dir():
        raise LayoutError(f"{src} is not a folder")
    skip = set(skip) | {src / REJECTED_DIR}
    seg = _segmentation_folders(src, options)
    if seg is not None:
        return _discover_segmentation(src, seg[0], seg[1], options, skip)
    if options.labels_csv is not None:
        return _discover_csv(src, options, skip)
    root = src / "PetImages" if (src / "PetImages").is_dir() else src
    splits_with_classes = [
        d.name for d in _subdirs(root)
        if canonical_split_name(d.name) in SPLITS and _subdirs(d) and not _has_images(d)
    ]
    if len({canonical_split_name(n) for n in splits_with_classes} & {"train", "valid"}) == 2:
        raise LayoutError(
            f"{src} is already split ({', '.join(sorted(splits_with_classes))} hold class folders). "
            f"Use it as it is: prep stats {src}"
        )
    if (root / "train").is_dir():
        root = root / "train"
    if _has_images(root):
        parser = options.label_parser
        if parser is None:
            from prep.split.label_parsers import prefix_label

            parser = prefix_label
        inventory = _filename_labels(src, root, parser, skip)
    elif _subdirs(root):
        inventory = _class_folders(src, root, skip)
    else:
        raise LayoutError(f"No images found in {root}")
    _count_unlabeled_siblings(src, root, inventory, skip)
    if not inventory.samples and not inventory.unlabeled:
        from prep.layout import IMAGE_EXTENSIONS

        raise LayoutError(f"No images found in {root}: no file there has an image extension ({', '.join(IMAGE_EXTENSIONS)})")
    if not inventory.samples:
        raise LayoutError(
            f"Found {len(inventory.unlabeled)} images in {root} but none with a label "
            f"({inventory.description}). Try --label-pattern, --labels or class folders."
        )
    return inventory
