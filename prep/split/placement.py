"""Placing files as a journal says, finishing an interrupted run, and undoing it.

Each placement is one atomic step that can never replace an existing file (a rename the
kernel refuses to make over a file, a hard link, a symlink, or a copy to a hidden temporary
name that is then renamed the same way), so after a kill every file is either where it was
or where it belongs. ``place`` and ``unplace`` look before they act and can be run again any
number of times; neither ever overwrites or deletes a file that is not its own copy.
"""

from __future__ import annotations

import errno
import filecmp
import logging
import os
import stat
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from prep.errors import DiskError, JournalError, PlacementError
from prep.util.files import copy_new_file, partial_copy_path, rename_no_replace
from prep.split.journal import Entry, Journal

log = logging.getLogger(__name__)

MODES = ("move", "link", "copy", "symlink")

Advance = Callable[[int], None]


@dataclass
class PlacementResult:
    placed: int = 0
    copied_instead_of_linked: int = 0


def _same_content(a: str, b: str) -> bool:
    if not (_is_regular(a) and _is_regular(b)):  # never read a FIFO or a device: it may not end
        return False
    return filecmp.cmp(a, b, shallow=False)


def _is_regular(path: str) -> bool:
    """Whether ``path`` leads to a regular file (links followed; a broken link does not)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _link_target(src: str) -> str:
    """What the placed stand-in of a file that is no regular file points to: the link's own
    target for a link, else the file itself."""
    return os.readlink(src) if os.path.islink(src) else src


def _move(src: str, dst: str) -> None:
    try:
        rename_no_replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # Across filesystems: copy, then remove the original. A kill in between leaves
        # the original plus a full copy, which the next run or an undo resolves.
        copy_new_file(src, dst)
        os.unlink(src)


def _discard_partial_copy(dst: str) -> None:
    """Remove what a copy to ``dst`` killed half-way left behind (it is never ``dst``)."""
    with suppress(FileNotFoundError):
        os.unlink(partial_copy_path(dst))


def _is_partial_copy(entry: Entry, src: str, dst: str) -> bool:
    """An interrupted copy under its final name, as preps before temporary names left
    them: shorter than the journal's size, and a prefix of the original (an edited file is
    not, and is never removed)."""
    if os.path.islink(dst) or not os.path.exists(src):
        return False
    size = os.path.getsize(dst)
    if size >= entry.size:
        return False
    with open(src, "rb") as original, open(dst, "rb") as copy:
        return original.read(size) == copy.read()


def _finish_interrupted(entry: Entry, src: str, dst: str) -> bool:
    """True when the entry is already placed; resolves a half-done cross-device move."""
    src_there, dst_there = os.path.lexists(src), os.path.lexists(dst)
    if dst_there and not src_there:
        return True
    if src_there and not dst_there:
        return False
    if src_there and dst_there:
        if _same_content(src, dst):
            os.unlink(src)
            return True
        if _is_partial_copy(entry, src, dst):
            os.unlink(dst)
            return False
        raise JournalError(f"Both {src} and {dst} exist with different content; resolve by hand.")
    raise JournalError(f"{entry.src} is neither at {src} nor at {dst}; it was moved by something else.")


def place(journal: Journal, advance: Advance = lambda n: None, resuming: bool = False) -> PlacementResult:
    """Put every journal entry in place.

    Args:
        journal: the saved plan.
        advance: progress callback, called with the number of files handled.
        resuming: look at each file first (after an interrupted run) instead of acting.

    Raises:
        JournalError: the disk disagrees with the journal in a way that risks data.
    """
    result = PlacementResult()
    # Plain strings, not Path objects: pathlib costs more than the rename itself here.
    src_root, out_root = journal.src_root + os.sep, journal.out_root + os.sep
    batch = 0
    for entry in journal.entries:
        src, dst = src_root + entry.src, out_root + entry.dst
        batch += 1
        if batch == 512:
            advance(batch)
            batch = 0
        if src == dst:
            continue
        try:
            _place_one(journal.mode, entry, src, dst, resuming, result)
        except OSError as exc:
            if exc.filename is None:  # sendfile and write name no file: say which one it was
                exc.filename, exc.filename2 = src, dst
            advance(batch)
            raise stopped_half_way(journal, result.placed, exc) from None
    advance(batch)
    return result


def stopped_half_way(journal: Journal, placed: int, exc: OSError) -> PlacementError:
    """The error for a split the disk stopped: the cause, and how to finish or undo it."""
    cause = DiskError.from_os_error(exc, "move" if journal.mode == "move" else "place")
    return PlacementError(
        f"{cause} The split stopped after placing {placed} of {len(journal.entries)} files; nothing "
        f"was lost. Once the cause is fixed, run the same command again to finish, or put "
        f"everything back with: prep split --undo {journal.out_root}"
    )


def _place_one(mode: str, entry: Entry, src: str, dst: str, resuming: bool, result: PlacementResult) -> None:
    if resuming:
        if mode != "symlink":
            _discard_partial_copy(dst)
        if mode == "move":
            if _finish_interrupted(entry, src, dst):
                return
        elif os.path.lexists(dst):
            if mode == "symlink" or not _is_partial_copy(entry, src, dst):
                return
            os.unlink(dst)  # an interrupted copy by a prep older than temporary names
    if mode == "move":
        _move(src, dst)
    elif mode != "symlink" and not _is_regular(src):
        # A dangling or looping link, a FIFO, a device (set aside as unreadable) has no
        # content to copy, or none that ends: a link is placed, never followed or read.
        os.symlink(_link_target(src), dst)
    elif mode == "copy":
        copy_new_file(src, dst)
    elif mode == "symlink":
        os.symlink(src, dst)
    else:
        try:
            os.link(src, dst)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            copy_new_file(src, dst)
            result.copied_instead_of_linked += 1
    result.placed += 1


def _is_own_copy(mode: str, src: str, dst: str) -> bool:
    if mode == "symlink":
        return os.path.islink(dst) and os.readlink(dst) == src
    if not _is_regular(src):  # a placed link to a broken link, a FIFO or a device
        return os.path.islink(dst) and os.readlink(dst) == _link_target(src)
    if mode == "link" and os.path.samefile(src, dst):
        return True
    return _same_content(src, dst)


def unplace(journal: Journal, advance: Advance = lambda n: None) -> int:
    """Reverse every placement; return how many files were put back or removed.

    Moved files go back to where they were; links and copies are removed only after
    checking that they still are the original's link or an identical copy.

    Raises:
        JournalError: a file is missing from both places, or a copy was changed.
    """
    src_root, out_root = journal.src_root + os.sep, journal.out_root + os.sep
    undone = 0
    batch = 0
    # Last placed, first put back: should one file ever have gone where another had been,
    # that one is moved out of the way before the other comes back.
    for entry in reversed(journal.entries):
        batch += 1
        if batch == 512:
            advance(batch)
            batch = 0
        src, dst = src_root + entry.src, out_root + entry.dst
        if src == dst:
            continue
        try:
            undone += _unplace_one(journal.mode, entry, src, dst)
        except OSError as exc:
            advance(batch)
            raise PlacementError(
                f"{DiskError.from_os_error(exc, 'put back')} {undone} files were put back so far; "
                f"nothing was lost. Once the cause is fixed, run prep split --undo {journal.out_root} again."
            ) from None
    advance(batch)
    return undone


def _unplace_one(mode: str, entry: Entry, src: str, dst: str) -> int:
    """Put one entry back; 1 when a file was moved back or removed, else 0."""
    if mode != "symlink":
        _discard_partial_copy(dst)
    src_there, dst_there = os.path.lexists(src), os.path.lexists(dst)
    if mode == "move":
        if src_there and dst_there:
            if not (_same_content(src, dst) or _is_partial_copy(entry, src, dst)):
                raise JournalError(f"Both {src} and {dst} exist with different content; resolve by hand.")
            os.unlink(dst)
        elif dst_there:
            os.makedirs(os.path.dirname(src), exist_ok=True)
            _move(dst, src)
        elif not src_there:
            raise JournalError(f"{entry.src} is neither at {src} nor at {dst}; it was moved by something else.")
        else:
            return 0
        return 1
    if not dst_there:
        return 0
    if not (_is_own_copy(mode, src, dst) or (mode != "symlink" and _is_partial_copy(entry, src, dst))):
        raise JournalError(f"{dst} is no longer an unchanged {mode} of {src}; not removing it.")
    os.unlink(dst)
    return 1


def remove_empty_dirs(folders: list[Path]) -> list[Path]:
    """Remove each folder that is empty, deepest first; return the ones removed."""
    removed = []
    for folder in sorted(set(folders), key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
            removed.append(folder)
        except OSError:
            pass  # not empty, or already gone: leave it
    return removed
