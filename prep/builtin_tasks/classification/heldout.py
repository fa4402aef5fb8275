"""The folder ``prep evaluate`` reads: a split dataset, a split holding only ``valid/`` or
``test/``, or bare class folders (``FOLDER/<class>/<image>``), as a held-out set comes.

The model's classes decide: a folder of ``FOLDER`` named like a split (``valid``, ``val``,
``test`` ...) that is not one of the model's classes makes ``FOLDER`` a split dataset, else
its folders are the classes. A class the model does not know is an error, as it could only
be counted wrong; a class the folder lacks is fine.
"""

from __future__ import annotations

import os
from pathlib import Path

from prep.errors import DatasetNotFoundError, TaskMismatchError, UnknownClassError, UsageError
from prep.layout import REJECTED_DIR, SEGMENTATION, SPLITS, canonical_split_name, is_image_name, is_junk, split_kind

# What evaluate reads when no split is named: the first of these that the folder has.
DEFAULT_SPLITS = ("valid", "test")


def _folders(folder: Path) -> list[Path]:
    return sorted(
        Path(entry.path) for entry in os.scandir(folder)
        if entry.is_dir() and not is_junk(entry.name, is_dir=True) and entry.name != REJECTED_DIR
    )


def evaluation_split(folder: Path, split: str | None, classes: list[str]) -> tuple[Path, str]:
    """The folder of class folders to evaluate on, and its name for reports (the split's
    name, or the folder's for bare class folders).

    Args:
        folder: what the user gave.
        split: the split asked for with ``--split`` (``None``: ``valid``, else ``test``).
        classes: the model's classes.

    Raises:
        DatasetNotFoundError: no such folder, or no such split in it.
        UsageError: a split asked of bare class folders.
        UnknownClassError: a class folder the model was not trained on.
        TaskMismatchError: the folder holds images/ and masks/ (a segmentation split).
    """
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{folder} is not a folder")
    known = set(classes)
    splits = {
        canonical_split_name(path.name): path for path in _folders(folder)
        if canonical_split_name(path.name) in SPLITS and path.name not in known
    }
    if splits:
        wanted = canonical_split_name(split) if split else next((name for name in DEFAULT_SPLITS if name in splits), None)
        if wanted not in splits:
            asked = f"no {split} split" if split else "neither a valid/ nor a test/ split"
            raise DatasetNotFoundError(f"{folder} has {asked} (it has {', '.join(sorted(splits))}); choose one with --split")
        chosen, name = splits[wanted], wanted
    elif split:
        raise UsageError(f"{folder} holds class folders, not splits; leave out --split {split}")
    else:
        chosen, name = folder, folder.name
        if not _folders(folder) and any(is_image_name(p.name) for p in folder.iterdir() if p.is_file()):
            raise DatasetNotFoundError(
                f"{folder} holds images but no class folders, so there is nothing to score them against; "
                f"evaluate needs FOLDER/<class>/<image> (prep predict labels unlabeled images)"
            )
    if split_kind(chosen) == SEGMENTATION and not {"images", "masks"} & known:
        raise TaskMismatchError(f"{chosen} holds images/ and masks/, a segmentation set; this model classifies images")
    unknown = [path.name for path in _folders(chosen) if path.name not in known]
    if unknown:
        raise UnknownClassError(
            f"{chosen / unknown[0]} is a class the model was not trained on "
            f"(it knows {', '.join(classes)}); move it out of the folder to evaluate the rest"
        )
    return chosen, name
