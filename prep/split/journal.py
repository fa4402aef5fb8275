"""The split journal: the whole plan, written to disk before the first file moves.

Because every placement is a single atomic filesystem operation (a rename, a link, or a
copy to a temporary name followed by a rename), the journal does not need a record per
completed move: where each file is now tells whether it was placed. A run killed at any
moment is therefore finished, or undone, by walking the journal and looking.

The file is ``OUT/split-journal.json``; its schema is documented in the README.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from prep.errors import JournalError
from prep.util.files import atomic_write_json

JOURNAL_NAME = "split-journal.json"
# One fixed name, written only under the lock on the output folder: a kill during a save
# leaves at most this file, which the next save reuses and ``discard_stale_temp`` removes.
JOURNAL_TEMP_NAME = ".split-journal.json.tmp"
JOURNAL_FORMAT = "prep-split-journal/1"


class Status:
    IN_PROGRESS = "in-progress"
    DONE = "done"
    UNDOING = "undoing"


class Entry(NamedTuple):
    """One file's placement. ``src`` is relative to the source root, ``dst`` to the output.

    Stored in the journal as a plain list, in field order."""

    src: str
    dst: str
    split: str  # train, valid, test, or _rejected/<reason>
    label: str | None
    size: int
    digest: str | None = None  # BLAKE2b, only where duplicate detection needed it
    fold: int | None = None  # with --folds: the cross-validation fold of a train image


@dataclass
class Journal:
    prep_version: str
    status: str
    src_root: str
    out_root: str
    mode: str
    seed: int
    options: dict[str, Any]
    layout: str
    created_dirs: list[str]  # relative to out_root, parents first; removed again by undo
    entries: list[Entry]
    report: dict[str, Any] = field(default_factory=dict)
    created: float = field(default_factory=time.time)

    @property
    def path(self) -> Path:
        return Path(self.out_root) / JOURNAL_NAME

    def save(self, durable: bool = True) -> None:
        """Write the journal atomically (see ``prep.util.files.atomic_write_json``).

        Args:
            durable: flush to disk before returning. Needed before files move; a status
                change after they moved may skip it, since losing it to a power cut only
                makes the next run look, find everything in place, and record it again.
        """
        # Built by hand: dataclasses.asdict deep-copies every entry, seconds for 100k files.
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["format"] = JOURNAL_FORMAT
        data["entries"] = self.entries  # NamedTuples serialise as JSON lists
        atomic_write_json(self.path, data, durable=durable, tmp=self.path.with_name(JOURNAL_TEMP_NAME))

    @classmethod
    def load(cls, path: Path) -> "Journal":
        """Read a journal.

        Raises:
            JournalError: the file is not a journal this version of prep can read.
        """
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.pop("format", None) != JOURNAL_FORMAT:
                raise JournalError(f"{path} is not a prep split journal ({JOURNAL_FORMAT})")
            data["entries"] = [Entry(*row) for row in data["entries"]]
            return cls(**data)
        except JournalError:
            raise
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise JournalError(f"Cannot read split journal {path}: {exc}") from None

    @staticmethod
    def discard_stale_temp(out_root: Path) -> None:
        """Remove a half-written journal left by a process killed while saving one."""
        try:
            (out_root / JOURNAL_TEMP_NAME).unlink()
        except FileNotFoundError:
            pass

    @classmethod
    def find(cls, out_root: Path) -> "Journal | None":
        """The journal in ``out_root``, or None when there is none."""
        path = out_root / JOURNAL_NAME
        return cls.load(path) if path.exists() else None


# ``save`` writes ``status`` second, so the head of even a 100k-file journal holds it.
_STATUS_NEAR_START = re.compile(r'"status"\s*:\s*"([a-z-]+)"')


def split_status(out_root: Path) -> str | None:
    """The status of the split in ``out_root`` (``Status``), or None when it has no journal.

    Reads only the head of the journal: commands that read a split call this every time.
    """
    path = out_root / JOURNAL_NAME
    try:
        with path.open("rb") as file:
            head = file.read(4096).decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise JournalError(f"Cannot read split journal {path}: {exc.strerror or exc}") from None
    match = _STATUS_NEAR_START.search(head)
    return match.group(1) if match else Journal.load(path).status
