"""The folder ``prep evaluate`` reads for a multi-label model: a split dataset (its
``--split``, default ``valid``, else ``test``) or one split's folder, ``images/`` with its
``labels.csv``, as a held-out set comes."""

from __future__ import annotations

from pathlib import Path

from prep.errors import DatasetNotFoundError, TaskMismatchError, UsageError
from prep.layout import IMAGES_DIR, LABELS_FILE, LAYOUT_SHAPES, MULTILABEL, SPLITS, canonical_split_name, split_kind

DEFAULT_SPLITS = ("valid", "test")


def evaluation_index(folder: Path, split: str | None) -> "tuple[DatasetIndex, str]":  # noqa: F821
    """The index to read and the split's name in it.

    Raises:
        DatasetNotFoundError: no such folder, or no such split in it.
        UsageError: a split asked of a single split's folder.
        TaskMismatchError: a folder of another layout (class folders, masks).
    """
    from prep.data.index import DatasetIndex

    if not folder.is_dir():
        raise DatasetNotFoundError(f"{folder} is not a folder")
    if (folder / IMAGES_DIR).is_dir() and (folder / LABELS_FILE).is_file():  # one split, as it is
        if split:
            raise UsageError(f"{folder} is one split (images/ and {LABELS_FILE}); leave out --split {split}")
        name = canonical_split_name(folder.name) if canonical_split_name(folder.name) in SPLITS else "valid"
        return DatasetIndex(folder.parent, {name: folder}), name
    splits = {canonical_split_name(p.name): p for p in sorted(folder.iterdir()) if p.is_dir() and canonical_split_name(p.name) in SPLITS}
    wanted = canonical_split_name(split) if split else next((name for name in DEFAULT_SPLITS if name in splits), None)
    if wanted not in splits:
        asked = f"no {split} split" if split else "neither a valid/ nor a test/ split"
        has = f" (it has {', '.join(sorted(splits))})" if splits else ""
        raise DatasetNotFoundError(f"{folder} has {asked}{has}; give a multi-label split dataset, or one split's folder")
    kind = split_kind(splits[wanted])
    if kind != MULTILABEL:
        raise TaskMismatchError(
            f"The model is a multilabel model, but {splits[wanted]} holds {LAYOUT_SHAPES[kind]}, not {LAYOUT_SHAPES[MULTILABEL]}"
        )
    return DatasetIndex(folder, splits), wanted
