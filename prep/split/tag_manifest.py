"""A multi-label split's ``labels.csv``: written by ``prep split``, read by the index
(``prep.data.index``), as ``prep.split.folds`` is for ``folds.csv``.

``ROOT/<split>/labels.csv`` has the header ``image,tags`` and a row per image of
``ROOT/<split>/images/``: its file name and its tags, separated by single spaces (Kaggle's
Planet format: ``train_10,clear primary water``). Both sides use these functions, so the
writer and the reader cannot drift apart.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable

from prep.errors import LabelsFileError
from prep.layout import IMAGES_DIR, LABELS_FILE, LABELS_HEADER, TAG_SEPARATOR


def labels_text(rows: Iterable[tuple[str, str]]) -> str:
    """``labels.csv``'s content for (image file name, tags joined by spaces) rows, sorted."""
    from prep.util.files import csv_text

    return csv_text(LABELS_HEADER, rows)


def read_labels(split_dir: Path, images: list[Path]) -> dict[str, tuple[str, ...]]:
    """``split_dir/labels.csv`` as image file name -> tags, checked to name exactly the
    ``images`` of ``split_dir/images/``.

    Raises:
        LabelsFileError: no such file, a malformed one (the line named), an image listed
            twice, an unsafe tag, or an image of images/ it does not name (or one it names
            that images/ lacks).
    """
    from prep.split.safe_names import sanitize_class_name

    path = split_dir / LABELS_FILE
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise LabelsFileError(f"{split_dir} has {IMAGES_DIR}/ but no {LABELS_FILE} naming their tags") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelsFileError(f"Cannot read {path}: {exc}") from None
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        raise LabelsFileError(f"{path} is not a readable CSV file: {exc}") from None
    if not rows or tuple(cell.strip() for cell in rows[0]) != LABELS_HEADER:
        raise LabelsFileError(f"{path} does not start with the header {','.join(LABELS_HEADER)}")
    tags_of: dict[str, tuple[str, ...]] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 2 or not row[0].strip():
            raise LabelsFileError(f"{path} line {line}: expected image,tags, got {','.join(row)!r}")
        image, cell = row[0].strip(), row[1]
        if image in tags_of:
            raise LabelsFileError(f"{path} line {line}: {image} is listed twice")
        tags = [tag for tag in cell.split(TAG_SEPARATOR) if tag]
        tags_of[image] = tuple(sorted({sanitize_class_name(tag, f"{path} line {line}", what="Tag") for tag in tags}))
    on_disk = {image.name for image in images}
    unnamed = sorted(on_disk - tags_of.keys())
    if unnamed:
        more = f" and {len(unnamed) - 1} more" if len(unnamed) > 1 else ""
        raise LabelsFileError(f"{split_dir / IMAGES_DIR / unnamed[0]}{more} has no row in {path}: add its tags, or move it out")
    gone = sorted(tags_of.keys() - on_disk)
    if gone:
        more = f" and {len(gone) - 1} more" if len(gone) > 1 else ""
        raise LabelsFileError(f"{path} names {gone[0]}{more}, which {split_dir / IMAGES_DIR} does not hold; put it back, or remove its row")
    return tags_of
