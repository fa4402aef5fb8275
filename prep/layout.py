"""The on-disk contract between ``prep split`` and everything that reads a split dataset.

``prep split`` writes, and stats, augment, train and evaluate read:

* a classification dataset: ``ROOT/<split>/<class>/<image>``;
* a segmentation dataset: ``ROOT/<split>/images/<image>`` and ``ROOT/<split>/masks/<mask>``,
  a mask named like its image (a ``_mask`` suffix is allowed), and optionally the class
  table ``ROOT/classes.csv`` (see ``prep.masks.class_table``);
* a multi-label dataset: ``ROOT/<split>/images/<image>`` and ``ROOT/<split>/labels.csv``
  (``image,tags``: every image of ``images/`` by file name, and its tags separated by
  single spaces, as Kaggle's Planet CSV has them; see ``prep.split.tag_manifest``);
* a dataset split into folds for cross-validation (``prep split --folds K``): no ``valid/``,
  and the manifest ``ROOT/folds.csv`` (``path,fold``: every image of ``train/``, relative
  to ROOT, and its fold, 0 to K-1; see ``prep.split.folds``);

where ``<split>`` is ``train``, ``valid`` or ``test`` (``val``, ``validation``, ``training``
and ``testing`` are read as those), files set aside are under ``ROOT/_rejected/``, and OS
litter and hidden names are never samples or classes. Both sides import these names from
here, so the writer and the readers cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"val": "valid", "validation": "valid", "training": "train", "testing": "test"}
REJECTED_DIR = "_rejected"
IMAGES_DIR = "images"
MASKS_DIR = "masks"
MASK_SUFFIX = "_mask"
# A segmentation dataset's class table (``id,name[,r,g,b]``), beside its splits.
CLASS_TABLE = "classes.csv"
# Which fold of a cross-validation each train image is in (``path,fold``), beside the splits.
FOLDS_FILE = "folds.csv"
# A multi-label split's images and their tags (``image,tags``), in the split's folder.
LABELS_FILE = "labels.csv"
LABELS_HEADER = ("image", "tags")
TAG_SEPARATOR = " "

CLASSIFICATION = "classification"
SEGMENTATION = "segmentation"
MULTILABEL = "multilabel"
# What the train split of each layout holds, in words (for messages about a dataset that
# does not fit a trainer).
LAYOUT_SHAPES = {
    CLASSIFICATION: "class folders", SEGMENTATION: "images/ and masks/ folders",
    MULTILABEL: f"an images/ folder and {LABELS_FILE} (tags per image)",
}

IMAGE_EXTENSIONS = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".jpe": "JPEG", ".jfif": "JPEG",
    ".png": "PNG", ".gif": "GIF", ".bmp": "BMP", ".webp": "WEBP",
    ".tif": "TIFF", ".tiff": "TIFF",
}
JUNK_FILES = {"thumbs.db", "desktop.ini", ".ds_store", "icon\r"}
JUNK_DIRS = {".ipynb_checkpoints", "__macosx", "__pycache__", "$recycle.bin"}


def canonical_split_name(name: str) -> str:
    """``val`` and ``validation`` -> ``valid``; other names pass through, lower-cased."""
    lowered = name.lower()
    return SPLIT_ALIASES.get(lowered, lowered)


def extension(name: str) -> str:
    """The lower-cased extension with its dot (``".jpg"``), or ``""``.

    Cheaper than os.path.splitext, which matters when called for every file."""
    dot = name.rfind(".")
    return name[dot:].lower() if dot > name.rfind("/") else ""


def is_image_name(name: str) -> bool:
    """Whether a file name has an image extension prep reads."""
    return extension(name) in IMAGE_EXTENSIONS


def is_junk(name: str, is_dir: bool = False) -> bool:
    """Files and folders that are never samples or classes: OS litter and hidden names."""
    if name.startswith("."):  # .DS_Store, ._resource forks, .git, .ipynb_checkpoints
        return True
    return name.lower() in (JUNK_DIRS if is_dir else JUNK_FILES)


def split_kind(split_dir: Path) -> str:
    """``segmentation`` when a split folder holds ``images/`` and ``masks/``, ``multilabel``
    when it holds ``images/`` and ``labels.csv``, else ``classification`` (class folders)."""
    if (split_dir / IMAGES_DIR).is_dir():
        if (split_dir / MASKS_DIR).is_dir():
            return SEGMENTATION
        if (split_dir / LABELS_FILE).is_file():
            return MULTILABEL
    return CLASSIFICATION
