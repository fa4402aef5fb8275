"""Small filesystem primitives that make writes survive a crash and never overwrite by accident."""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
import zlib
from contextlib import suppress
from functools import cache
from pathlib import Path
from typing import Any, Iterable, Sequence


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries, so that a rename inside it survives a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True, tmp: Path | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new, never half.

    The data goes to a temporary file beside ``path``, is flushed to disk, and is then
    renamed over ``path``; the folder is flushed so the rename itself is durable.
    ``tmp`` names the temporary file (default: hidden, beside ``path``, with the pid).
    """
    tmp = tmp or path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk or a Ctrl-C: leave no temporary file behind
        with suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_json(path: Path, value: Any, *, indent: int | None = None, durable: bool = True, tmp: Path | None = None) -> None:
    """``atomic_write_bytes`` of ``value`` as UTF-8 JSON.

    Non-ASCII text is written as it is, readable; a file name that is not UTF-8 (held as
    surrogates, see ``os.fsdecode``) cannot be, so then everything is written as ``\\u``
    escapes, which ``json.load`` turns back into the same name."""
    separators = None if indent else (",", ":")
    try:
        data = json.dumps(value, indent=indent, ensure_ascii=False, separators=separators).encode("utf-8")
    except UnicodeEncodeError:
        data = json.dumps(value, indent=indent, ensure_ascii=True, separators=separators).encode("ascii")
    atomic_write_bytes(path, data, durable=durable, tmp=tmp)


# renameat2(2)'s flag: fail with EEXIST instead of replacing the target (Linux 3.15+).
_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_FS_ENCODING = sys.getfilesystemencoding()


@cache
def _renameat2():
    """libc's renameat2, or None where the C library has none (macOS, old glibc)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def rename_no_replace(src: str, dst: str) -> None:
    """Rename ``src`` to ``dst``, failing with ``FileExistsError`` if ``dst`` exists.

    ``os.rename`` silently replaces an existing target. Here the kernel refuses instead
    (``RENAME_NOREPLACE``), so no race and no planning mistake can ever overwrite a file.
    Where the file system or C library lacks that flag, a hard link (which cannot replace
    either) and an unlink do the same; where hard links are impossible too, the target is
    looked at just before a plain rename.

    Raises:
        FileExistsError: ``dst`` exists.
        OSError: any other failure, with both paths.
    """
    function = _renameat2()
    if function is not None:
        # str.encode rather than os.fsencode: this runs once per file of a split.
        if function(_AT_FDCWD, src.encode(_FS_ENCODING, "surrogateescape"), _AT_FDCWD, dst.encode(_FS_ENCODING, "surrogateescape"), _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), src, None, dst)
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EMLINK):
            raise
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), src, None, dst) from None
        os.rename(src, dst)
        return
    os.unlink(src)


def partial_copy_path(dst: str) -> str:
    """Where a copy to ``dst`` is written before it is renamed into place.

    Hidden (so that no listing takes it for a sample), short (so that it fits wherever
    ``dst``'s own name fits) and derived from ``dst`` alone, so that a later run or an undo
    finds and removes what a killed copy left.
    """
    folder, _, name = dst.rpartition(os.sep)
    return f"{folder}{os.sep}.prep-partial-{zlib.crc32(name.encode('utf-8', 'surrogateescape')):08x}"


def copy_new_file(src: str, dst: str) -> None:
    """Copy ``src`` to ``dst``, which must not exist, so that ``dst`` is never partial.

    The bytes go to ``partial_copy_path(dst)`` first (in the kernel, with sendfile, so
    nothing waits in a user-space buffer), and only the finished copy is renamed to ``dst``
    (never replacing a file): a process killed at any moment leaves either no ``dst`` or a
    complete one, plus at most a hidden partial file that the next run removes. A failure (a
    full disk) removes the partial file before it raises. The copy is not fsynced: that
    would guard against a power cut too, at many times the cost of a copy.

    Raises:
        FileExistsError: ``dst`` exists.
        OSError: reading or writing failed.
    """
    tmp = partial_copy_path(dst)
    try:
        with open(src, "rb") as source, open(tmp, "wb") as target:
            size = os.fstat(source.fileno()).st_size
            offset = 0
            try:
                while offset < size:
                    sent = os.sendfile(target.fileno(), source.fileno(), offset, size - offset)
                    if sent == 0:
                        break
                    offset += sent
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
                    raise
                source.seek(offset)  # a file system without sendfile: plain reads and writes
                shutil.copyfileobj(source, target)
        rename_no_replace(tmp, dst)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A manifest's CSV content: ``header``, then ``rows`` sorted, lines ending in ``\n``
    (the same bytes on every system, so that a manifest compares equal to what wrote it)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(sorted(rows))
    return buffer.getvalue()
