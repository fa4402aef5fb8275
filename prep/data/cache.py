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

from prep.fsutil import fsync_dir
from prep.images import ImageDecodeError
from prep.parallel import imap_chunks
from prep.progress import NO_PROGRESS, Progress

FORMAT = "prep-decoded-cache/1"


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
        pixels = self.nbytes if self.mask_dtype is None else self.nbytes * 3 // (3 + self.mask_dtype.itemsize)
        try:
            sizes = [(self.folder / "pixels.u8").stat().st_size, (self.folder / "masks.u8").stat().st_size]
        except OSError:
            return False
        masks = pixels // 3 * self.mask_dtype.itemsize if self.mask_dtype is not None else 0
        return sizes == [pixels, masks]

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


def _map(path: Path, dtype: np.dtype) -> np.ndarray:
    if path.stat().st_size == 0:  # mmap cannot map an empty file (a store of corrupt files only)
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="c")  # copy-on-write: see DecodedStore.read


def _file_states(files: Sequence[tuple[Path, ...]]) -> list[list[list[int]]]:
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


def open_store(folder: Path, files: Sequence[tuple[Path, ...]], decoder_key: str) -> DecodedStore | None:
    """The store in ``folder`` when it is complete and holds exactly ``files`` as they are
    now, decoded with ``decoder_key``; else None."""
    if not (folder / "meta.json").is_file():
        return None
    try:
        store = DecodedStore(folder)
    except (OSError, ValueError, KeyError):
        return None
    paths = [[str(p) for p in sample] for sample in files]
    if store.decoder_key != decoder_key or store.files[0] != paths or store.files[1] != _file_states(files):
        return None
    if not store.complete():
        return None
    return store


def _decode_chunk(files: Sequence[tuple[Path, ...]], decoder: Any) -> list[Any]:
    """A build worker's job: each sample decoded, or the reason it could not be."""
    out = []
    for paths in files:
        try:
            out.append(decoder(paths))
        except ImageDecodeError as exc:
            out.append(str(exc))
    return out


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
    folder: Path, files: Sequence[tuple[Path, ...]], decoder: Any, *, workers: int = 1,
    progress: Progress = NO_PROGRESS, description: str = "Caching decoded images",
) -> DecodedStore:
    """Decode every sample of ``files`` with ``decoder`` into a store in ``folder``,
    copying the samples an older store there already holds unchanged.

    Raises:
        MaskError and other ``PrepError``: what the decoder raises for bad data (a mask
            value that is no class stops the build as it would stop training).
        OSError: the store cannot be written (the CLI names the path and the cause).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(folder.parent)
    previous = _previous_samples(folder, decoder.key)
    states = _file_states(files)
    paths = [[str(p) for p in sample] for sample in files]
    todo = [i for i in range(len(files)) if previous.get((tuple(paths[i]), _frozen(states[i]))) is None]
    partial = folder.parent / f"{folder.name}.partial-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        index, corrupt, mask_dtype, nbytes = _write_samples(partial, files, todo, paths, states, decoder, previous, workers, progress, description)
        np.save(partial / "index.npy", index)
        meta = {
            "format": FORMAT, "decoder": decoder.key, "files": [paths, states],
            "corrupt": {str(k): v for k, v in corrupt.items()}, "mask_dtype": mask_dtype, "nbytes": nbytes,
            "built": time.time(),
        }
        with open(partial / "meta.json", "w", encoding="utf-8") as meta_file:
            json.dump(meta, meta_file)
            meta_file.flush()
            os.fsync(meta_file.fileno())
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
    try:
        store = DecodedStore(folder)
    except (OSError, ValueError, KeyError):
        return {}
    if store.decoder_key != decoder_key or not store.complete():
        return {}
    paths, states = store.files
    return {
        (tuple(p), _frozen(s)): (store, i)
        for i, (p, s) in enumerate(zip(paths, states)) if i not in store.corrupt
    }


def _write_samples(partial, files, todo, paths, states, decoder, previous, workers, progress, description):
    """Append every sample to the store's files, in index order; decoded ones come from
    worker processes (``imap_chunks``), unchanged ones are copied from the older store."""
    index = np.zeros((len(files), 3), dtype=np.int64)
    corrupt: dict[int, str] = {}
    mask_dtype = None
    offset = 0

    with progress.task(description, len(files)) as advance:
        copied = len(files) - len(todo)
        if copied:
            advance(copied)
        chunks = imap_chunks(
            _decode_chunk, [files[i] for i in todo], decoder, chunk_size=16, workers=workers, min_items=64,
            advance=advance,
        )
        decoded = (sample for chunk in chunks for sample in chunk)
        with open(partial / "pixels.u8", "wb") as pixel_file, open(partial / "masks.u8", "wb") as mask_file:
            for i in range(len(files)):
                old = previous.get((tuple(paths[i]), _frozen(states[i])))
                sample = old[0].read(old[1]) if old is not None else next(decoded)
                if isinstance(sample, str):
                    corrupt[i] = sample
                    index[i] = (offset, 0, 0)
                    continue
                pixels, mask = sample
                height, width = pixels.shape[:2]
                index[i] = (offset, height, width)
                pixel_file.write(np.ascontiguousarray(pixels, dtype=np.uint8).data)
                offset += height * width * 3
                if mask is not None:
                    # One type for the whole store: 16 bits as soon as one mask needs them.
                    if mask_dtype is None or np.dtype(mask.dtype).itemsize > np.dtype(mask_dtype).itemsize:
                        mask_dtype = _widen_masks(mask_file, mask_dtype, mask.dtype, partial)
                    mask_file.write(np.ascontiguousarray(_as_mask_type(mask, mask_dtype)).data)
            # On disk before the store is renamed into place, so that even a power cut never
            # leaves a finished-looking store with missing pixels.
            for written in (pixel_file, mask_file):
                written.flush()
                os.fsync(written.fileno())
    nbytes = offset + (offset // 3) * (np.dtype(mask_dtype).itemsize if mask_dtype else 0)
    return index, corrupt, (np.dtype(mask_dtype).name if mask_dtype else None), nbytes


def _as_mask_type(mask: np.ndarray, dtype: Any) -> np.ndarray:
    """``mask`` in ``dtype``, its ignored pixels (the largest value of its type) moved to
    the largest value of ``dtype``."""
    dtype = np.dtype(dtype)
    if mask.dtype == dtype:
        return mask
    return np.where(mask == np.iinfo(mask.dtype).max, np.iinfo(dtype).max, mask).astype(dtype)


def _widen_masks(mask_file, current, wanted, partial: Path) -> str:
    """The masks' type once a mask of type ``wanted`` arrives; the masks written so far
    are rewritten in it when it is wider (uint8 -> uint16, keeping the ignore value the
    type's largest)."""
    wanted = np.dtype(wanted)
    if current is None:
        return wanted.name
    mask_file.flush()
    widened = _as_mask_type(np.fromfile(partial / "masks.u8", dtype=np.dtype(current)), wanted)
    mask_file.seek(0)
    mask_file.truncate()
    mask_file.write(widened.data)
    return wanted.name


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
