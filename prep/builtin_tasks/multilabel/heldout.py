"""The folder ``prep evaluate`` reads for a multi-label model, as a held-out set comes: a
split dataset (its ``--split``, default ``valid``, else ``test``), one split's folder
(``images/`` with its ``labels.csv``), or a folder of images with the competition's CSV
beside them (one ``.csv`` file: ``image_name,tags`` or ``Id,Target``), read in place."""

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
    tables = sorted(p for p in folder.glob("*.csv") if p.is_file())
    if not splits and len(tables) == 1:
        if split:
            raise UsageError(f"{folder} is a folder of images and {tables[0].name}, not a split dataset; leave out --split {split}")
        return _TaggedFolder.read(folder, tables[0]), "held-out"
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


class _TaggedFolder:
    """A folder of images tagged by a Kaggle CSV, listed as a one-split index would list it."""

    @staticmethod
    def read(folder: Path, table: Path) -> "DatasetIndex":  # noqa: F821
        """Raises: LabelsFileError: a CSV that is not multi-label, an image it does not name,
        or a row naming no image of the folder."""
        from prep.data.index import DatasetIndex
        from prep.errors import LabelsFileError
        from prep.layout import is_image_name, is_junk
        from prep.split.sources import LayoutOptions, read_label_csv

        labels, _ = read_label_csv(table, LayoutOptions(multi_label=True))
        root = folder / IMAGES_DIR if (folder / IMAGES_DIR).is_dir() else folder
        images = sorted(p for p in root.iterdir() if p.is_file() and is_image_name(p.name) and not is_junk(p.name))
        tags_of: dict[Path, tuple[str, ...]] = {}
        for image in images:
            row = labels.get(image.name) or labels.get(image.stem)
            if row is None:
                raise LabelsFileError(f"{image} has no row in {table}: add its tags, or move it out")
            tags_of[image] = tuple(row[0].split())
        named = {key for image in images for key in (image.name, image.stem)}
        gone = sorted(key for key in labels if key not in named)
        if gone:
            raise LabelsFileError(f"{table} names {gone[0]}{f' and {len(gone) - 1} more' if len(gone) > 1 else ''}, which {root} does not hold")

        class Index(DatasetIndex):
            def multilabel_samples(self, split: str, tags: list[str]) -> list[tuple[Path, tuple[int, ...]]]:
                index = {name: i for i, name in enumerate(tags)}
                unknown = next((t for held in tags_of.values() for t in held if t not in index), None)
                if unknown is not None:
                    raise DatasetNotFoundError(f"{table} tags an image {unknown!r}, a tag the model was not trained on")
                return [(image, tuple(index[t] for t in held)) for image, held in tags_of.items()]

        return Index(folder, {"held-out": root})
