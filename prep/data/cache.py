"""The decoded-image cache: each image decoded once, at the size training needs, into one
uint8 file that every loader worker maps into memory without copying.

Decoding a photo costs 1-25 ms; reading it back decoded costs microseconds. Before the
first epoch, each sample of a split is decoded by its dataset's decoder (the image at the
short side the pipeline needs, see ``prep.data.resolution``; masks at the image's size)
and appended to ``pixels.u8`` (and ``masks.u8``); ``index.npy`` holds each sample's
offset and shape. Augmentation still runs on every read, so it stays random per epoch.

Where the stores go, and whether there is room, is ``prep.data.cache_plan``'s part.

Never stale: a store is keyed by its split and its decoder's settings (``decoder.key``:
the side, the mask decoding), and records each file's size and modification time. A store
whose files changed is rebuilt, copying the samples that did not change. A store is built
in a ``.partial`` folder and renamed into place when complete, so a killed build is never
read (the next build removes what it left). A file that cannot be decoded is recorded with
the reason, and the dataset skips it as it would without a cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from prep.util.files import atomic_write_json, fsync_dir
from prep.images.decode import ImageDecodeError
from prep.util.parallel import imap_chunks
from prep.util.progress import NO_PROGRESS, Progress

FORMAT = "prep-decoded-cache/2"  # 2: one mask type per decoder


class DecodedStore:
    """A finished store, read by sample index. Pickles as its folder, so that each loader
    worker maps the files itself instead of receiving a copy of them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        self.decoder_key: str = meta["decoder"]
        self.files: list[list] = meta["files"]  # [[path, ...], [[size, mtime_ns], ...]] per sample
        self.corrupt: dict[int, str] = {int(k): v for k, v in meta["corrupt"].items()}
        self.mask_dtype = np.dtype(meta["mask_dtype"]) if meta["mask_dtype"] else None
        self.nbytes: int = meta["nbytes"]
        self.index = np.load(folder / "index.npy")  # offset, height, width per sample
        self._maps: tuple[np.ndarray, np.ndarray | None] | None = None

    def __len__(self) -> int:
        return len(self.index)

    def complete(self) -> bool:
        """Whether the files hold every byte the index points to (a store whose files were
        cut short, by hand or by a full disk, is rebuilt rather than read past its end)."""
        pixels = int((self.index[:, 1] * self.index[:, 2]).sum())  # corrupt samples are 0 x 0
        masks = pixels * self.mask_dtype.itemsize if self.mask_dtype is not None else 0
        try:
            sizes = [(self.folder / "pixels.u8").stat().st_size, (self.folder / "masks.u8").stat().st_size]
        except OSError:
            return False
        return sizes == [pixels * 3, masks]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__, _maps=None)
        state.pop("files")  # workers read by index; the file list is for checking freshness
        return state

    def _mapped(self) -> tuple[np.ndarray, np.ndarray | None]:
        if self._maps is None:
            pixels = _map(self.folder / "pixels.u8", np.uint8)
            masks = _map(self.folder / "masks.u8", self.mask_dtype) if self.mask_dtype is not None else None
            self._maps = (pixels, masks)
        return self._maps

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Sample ``index`` as its decoder gave it: ``(pixels, mask or None)``.

        Views of the map, not copies: reading a sample moves no bytes until the pipeline
        reads them. They are copy-on-write, so a pipeline that writes into its input gets
        private pages and the store stays as built.

        Raises:
            ImageDecodeError: the file could not be decoded when the store was built.
        """
        if index in self.corrupt:
            raise ImageDecodeError(self.corrupt[index])
        offset, height, width = (int(v) for v in self.index[index])
        pixels, masks = self._mapped()
        image = pixels[offset : offset + height * width * 3].reshape(height, width, 3)
        mask = None
        if masks is not None:
            start = offset // 3
            mask = masks[start : start + height * width].reshape(height, width)
        return image, mask


    def subset(self, positions: Sequence[int]) -> "StoreSubset":
        """The samples at ``positions``, read as samples 0, 1, ...: one fold's share of a
        cross-validation's store."""
        return StoreSubset(self, positions)


class StoreSubset:
    """Some of a store's samples, by position (see ``DecodedStore.subset``)."""

    def __init__(self, store: DecodedStore, positions: Sequence[int]) -> None:
        self.store = store
        self.positions = np.asarray(positions, dtype=np.int64)

    @property
    def folder(self) -> Path:
        return self.store.folder

    @property
    def nbytes(self) -> int:
        return self.store.nbytes

    def __len__(self) -> int:
        return len(self.positions)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.store.read(int(self.positions[index]))


def _map(path: Path, dtype: np.dtype) -> np.ndarray:
    if path.stat().st_size == 0:  # mmap cannot map an empty file (a store of corrupt files only)
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="c")  # copy-on-write: see DecodedStore.read


def file_states(files: Sequence[tuple[Path, ...]]) -> list[list[list[int]]]:
    """Each sample's files' ``[size, mtime_ns]``, what tells that a file changed."""
    states = []
    for paths in files:
        sample = []
        for path in paths:
            try:
                stat = os.stat(path)
                sample.append([stat.st_size, stat.st_mtime_ns])
            except OSError:
                sample.append([-1, -1])
        states.append(sample)
    return states


def store_folder(base: Path, split: str, decoder_key: str) -> Path:
    digest = hashlib.sha256(f"{FORMAT} {decoder_key}".encode()).hexdigest()[:12]
    return base / f"{split}-{digest}"


def open_store(folder: Path, files: Sequence[tuple[Path, ...]], decoder_key: str, states: list | None = None) -> DecodedStore | None:
    """The store in ``folder`` when it is complete and holds exactly ``files`` as they are
    now, decoded with ``decoder_key``; else None. ``states``: ``file_states(files)``, when
    the caller has it already."""
    store = _finished_store(folder, decoder_key)
    paths = [[str(p) for p in sample] for sample in files]
    if store is None or store.files[0] != paths or store.files[1] != (states or file_states(files)):
        return None
    return store


def _finished_store(folder: Path, decoder_key: str) -> DecodedStore | None:
    """The store in ``folder`` when there is a complete one made with ``decoder_key``."""
    if not (folder / "meta.json").is_file():
        return None
    try:
        store = DecodedStore(folder)
    except (OSError, ValueError, KeyError):
        return None
    return store if store.decoder_key == decoder_key and store.complete() else None


def _remove_stale_partials(base: Path) -> None:
    """Remove what killed builds on this machine left (their process is gone)."""
    host = socket.gethostname()
    for partial in base.glob("*.partial-*"):
        _, _, owner = partial.name.rpartition(".partial-")
        owner_host, _, pid = owner.rpartition("-")
        if owner_host != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(partial, ignore_errors=True)
        except PermissionError:
            pass


def build_store(
    folder: Path, files: Sequence[tuple[Path, ...]], decoder: Any, *, workers: int = 1, states: list | None = None,
    progress: Progress = NO_PROGRESS, description: str = "Caching decoded images",
) -> DecodedStore:
    """Decode every sample of ``files`` with ``decoder`` into a store in ``folder``,
    copying the samples an older store there already holds unchanged (``states`` as for
    ``open_store``).

    Raises:
        MaskError and other ``PrepError``: what the decoder raises for bad data (a mask
            value that is no class stops the build as it would stop training).
        OSError: the store cannot be written (the CLI names the path and the cause).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(folder.parent)
    previous = _previous_samples(folder, decoder.key)
    states = states or file_states(files)
    paths = [[str(p) for p in sample] for sample in files]
    copies = {
        i: previous[key] for i, key in enumerate(zip(map(tuple, paths), map(_frozen, states))) if key in previous
    }
    partial = folder.parent / f"{folder.name}.partial-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        index, corrupt, mask_dtype, nbytes = _write_samples(partial, files, copies, decoder, workers, progress, description)
        np.save(partial / "index.npy", index)
        atomic_write_json(partial / "meta.json", {
            "format": FORMAT, "decoder": decoder.key, "files": [paths, states],
            "corrupt": {str(k): v for k, v in corrupt.items()}, "mask_dtype": mask_dtype, "nbytes": nbytes,
            "built": time.time(),
        })
        _replace(partial, folder)
        fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return DecodedStore(folder)


def _frozen(state: list[list[int]]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(s) for s in state)


def _previous_samples(folder: Path, decoder_key: str) -> dict[tuple, tuple[DecodedStore, int]]:
    """An older store's samples by (files, their states): what a rebuild may copy."""
    store = _finished_store(folder, decoder_key)
    if store is None:
        return {}
    paths, states = store.files
    return {
        (tuple(p), _frozen(s)): (store, i)
        for i, (p, s) in enumerate(zip(paths, states)) if i not in store.corrupt
    }


class _StoreWriter:
    """Writes samples into a store being built, from any process: each sample's space is
    taken from a counter in shared memory and its bytes written there (``os.pwrite``), so
    decoded pixels never travel between processes. Masks go to the same place in
    ``masks.u8``, scaled by their item size. The index records where each sample went."""

    def __init__(self, partial: Path, mask_dtype: np.dtype | None) -> None:
        import multiprocessing

        self.partial, self.mask_dtype = partial, mask_dtype
        self.next_offset = multiprocessing.get_context("fork").Value("q", 0)
        self._fds: tuple[int, int] | None = None
        self._pid: int | None = None
        for name in ("pixels.u8", "masks.u8"):
            (partial / name).touch()

    def _files(self) -> tuple[int, int]:
        if self._pid != os.getpid():  # a forked worker opens its own descriptors
            self._fds = tuple(os.open(self.partial / name, os.O_WRONLY) for name in ("pixels.u8", "masks.u8"))
            self._pid = os.getpid()
        return self._fds

    def write(self, pixels: np.ndarray, mask: np.ndarray | None) -> tuple[int, int, int]:
        """Write one sample; return its index row ``(offset, height, width)``."""
        height, width = pixels.shape[:2]
        with self.next_offset.get_lock():
            offset = self.next_offset.value
            self.next_offset.value += height * width * 3
        pixel_fd, mask_fd = self._files()
        _pwrite_all(pixel_fd, np.ascontiguousarray(pixels, dtype=np.uint8), offset)
        if mask is not None:
            # The decoder's one mask type (an older store copied from has the same key, so
            # the same type): a mask of another size here would corrupt the offsets.
            if mask.dtype != self.mask_dtype:
                raise ValueError(f"a {mask.dtype} mask in a store of {self.mask_dtype} masks")
            _pwrite_all(mask_fd, np.ascontiguousarray(mask), offset // 3 * self.mask_dtype.itemsize)
        return offset, height, width

    def finish(self) -> int:
        """Flush both files to the disk; return the bytes written. On disk before the store
        is renamed into place, so that even a power cut never leaves a finished-looking
        store with missing pixels."""
        for name in ("pixels.u8", "masks.u8"):
            fd = os.open(self.partial / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        pixels = self.next_offset.value
        return pixels + (pixels // 3 * self.mask_dtype.itemsize if self.mask_dtype is not None else 0)


def _pwrite_all(fd: int, array: np.ndarray, offset: int) -> None:
    view = memoryview(array).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


_writer: _StoreWriter | None = None  # the build in progress, inherited by forked workers


def _decode_and_write(chunk: Sequence[tuple[int, tuple[Path, ...]]], decoder: Any) -> list[tuple]:
    """A build worker's job: decode each sample and write it; ``(index, offset, height,
    width)`` for each, or ``(index, reason)`` for a file that cannot be decoded."""
    rows = []
    for index, paths in chunk:
        try:
            pixels, mask = decoder(paths)
        except ImageDecodeError as exc:
            rows.append((index, str(exc)))
            continue
        rows.append((index, *_writer.write(pixels, mask)))
    return rows


def _write_samples(partial, files, copies, decoder, workers, progress, description):
    """Write every sample into the store's files: the unchanged ones (``copies``: index ->
    (older store, its index)) copied here, the others decoded and written by worker
    processes (``imap_chunks``)."""
    global _writer

    mask_dtype = getattr(decoder, "mask_dtype", None)
    index = np.zeros((len(files), 3), dtype=np.int64)
    corrupt: dict[int, str] = {}
    _writer = writer = _StoreWriter(partial, mask_dtype)
    try:
        with progress.task(description, len(files)) as advance:
            for i, (store, position) in copies.items():
                index[i] = writer.write(*store.read(position))
            if copies:
                advance(len(copies))
            chunks = imap_chunks(
                _decode_and_write, [(i, paths) for i, paths in enumerate(files) if i not in copies], decoder,
                chunk_size=16, workers=workers, min_items=64, advance=advance,
            )
            for rows in chunks:
                for row in rows:
                    if isinstance(row[1], str):
                        corrupt[row[0]] = row[1]
                    else:
                        index[row[0]] = row[1:]
        nbytes = writer.finish()
    finally:
        _writer = None
    return index, corrupt, (mask_dtype.name if mask_dtype is not None else None), nbytes


def _replace(partial: Path, folder: Path) -> None:
    """Put a finished store in place of ``folder`` (an older one is moved aside first,
    since a folder cannot be renamed over a non-empty one)."""
    if folder.exists():
        aside = folder.parent / f"{folder.name}.old-{os.getpid()}"
        folder.rename(aside)
        partial.rename(folder)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        partial.rename(folder)
