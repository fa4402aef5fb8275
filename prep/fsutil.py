"""Small filesystem primitives that make writes survive a crash."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


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
    with open(tmp, "wb") as file:
        file.write(data)
        if durable:
            file.flush()
            os.fsync(file.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(path.parent)


def atomic_write_json(path: Path, value: Any, *, indent: int | None = None, durable: bool = True, tmp: Path | None = None) -> None:
    """``atomic_write_bytes`` of ``value`` as UTF-8 JSON."""
    text = json.dumps(value, indent=indent, ensure_ascii=False, separators=None if indent else (",", ":"))
    atomic_write_bytes(path, text.encode("utf-8"), durable=durable, tmp=tmp)
