"""Remembering which dataset the working directory is about.

``prep split ./dogsandcats`` records the split dataset in ``./.prep/workspace.json``, so
that ``prep stats`` and ``prep train`` run from the same directory find it with no
arguments. The dataset is chosen, in order, from: the explicit path, the ``PREP_DATA``
environment variable, that file, and the working directory itself when it holds a
``train/`` folder.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from prep.errors import DatasetNotFoundError
from prep.util.files import atomic_write_json

STATE_FILE = Path(".prep") / "workspace.json"

log = logging.getLogger(__name__)


def _state_path(cwd: Path | None) -> Path:
    return (cwd or Path.cwd()) / STATE_FILE


def remembered_dataset(cwd: Path | None = None) -> Path | None:
    """The dataset recorded for ``cwd``, or None."""
    try:
        data = json.loads(_state_path(cwd).read_text(encoding="utf-8"))
        return Path(data["dataset"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_dataset(dataset: Path, cwd: Path | None = None) -> Path | None:
    """Record ``dataset`` as the working directory's dataset (best effort: a read-only
    working directory only loses the convenience, so it is logged, not raised).

    Returns the other dataset this record replaced, if any, so that the user can be told.
    """
    path = _state_path(cwd)
    previous = remembered_dataset(cwd)
    try:
        path.parent.mkdir(exist_ok=True)
        atomic_write_json(path, {"dataset": str(dataset.resolve())}, indent=2)
    except OSError as exc:
        log.warning("Could not remember the dataset in %s: %s", path, exc)
        return None
    return previous if previous is not None and previous != dataset.resolve() else None


def forget_dataset(dataset: Path, cwd: Path | None = None) -> None:
    """Drop the record if it points at ``dataset``."""
    if remembered_dataset(cwd) == dataset.resolve():
        try:
            _state_path(cwd).unlink()
        except OSError:
            pass


def choose_dataset(given: Path | None, cwd: Path | None = None) -> tuple[Path, str | None]:
    """The dataset a command should work on (see the module docstring for the order), and,
    when it was not given, where it came from, in words a user can act on.

    Raises:
        DatasetNotFoundError: none was given and none can be found.
    """
    if given is not None:
        return given, None
    env = os.environ.get("PREP_DATA")
    if env:
        return Path(env), "from PREP_DATA"
    remembered = remembered_dataset(cwd)
    if remembered is not None:
        if remembered.is_dir():
            return remembered, "the last one split from this folder"
        raise DatasetNotFoundError(f"The remembered dataset {remembered} no longer exists; pass a path.")
    here = cwd or Path.cwd()
    if (here / "train").is_dir():
        return here, "the working directory, which has train/"
    raise DatasetNotFoundError(
        "No dataset given, and none remembered here. Pass a path, or run prep split first."
    )


def resolve_dataset(given: Path | None, cwd: Path | None = None) -> Path:
    """The dataset :func:`choose_dataset` picks."""
    return choose_dataset(given, cwd)[0]
