"""The decoded-image cache: each image decoded once, at the size training needs, into one
uint8 file that every loader worker maps into memory without copying.

Decoding a photo costs 1-25 ms; reading it back decoded costs microseconds. Before the
first epoch, each sample of a split is decoded by its dataset's decoder (the image at the
short side the pipeline needs, see ``prep.data.resolution``; masks at the image's size)
and appended to ``pixels.u8`` (and ``masks.u8``); ``index.npy`` holds each sample's
offset and shape. Augmentation still runs on every read, so it stays random per epoch.

Where the stores go, and whether there is room, is ``prep.data.cache_plan``'s part.

Never stale: a store is keyed by its split and its decoder's settings (``decoder.key``:
the side, the mask decoding), and records each file's size, modification time, change time
and inode, and a fingerprint of its bytes (BLAKE2b). The change time cannot be set back by
hand, so a file replaced by another of the same size and modification time (``touch -r``)
is seen. A store whose files changed is rebuilt, copying the samples whose files still
hold the bytes they were decoded from.

Never tampered: each stored sample carries a CRC-32 of its bytes, checked the first time
this process reads it (an epoch after the first pays nothing), and the index carries a
SHA-256 in ``meta.json``, checked at open together with every offset's bounds. A store
whose index fails is not used (``StoreCheck`` says why, and it is built again); a sample
that fails stops the run with one line (``DamagedCacheError``) and sets the store aside,
so that the next run builds it again. A store is trusted only where it was built: it
records the machine and its own folder's inode, so a cache copied or unpacked with a
dataset (a tar with a ``.prep/cache`` in it) is built again here, never copied from.
``--cache verify`` also re-reads every source file and every stored sample before use.

A store is built in a ``.partial`` folder and renamed into place when complete, so a killed
build is never read (the next build removes what it left). A file that cannot be decoded
is recorded with the reason, and the dataset skips it as it would without a cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import time
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from prep.errors import PrepError
from prep.util.files import atomic_write_json, fsync_dir
from prep.images.decode import ImageDecodeError
from prep.util.parallel import imap_chunks
from prep.util.progress import NO_PROGRESS, Progress

log = logging.getLogger(__name__)

FORMAT = "prep-decoded-cache/3"  # 2: one mask type per decoder; 3: checksums, fingerprints, where built
DAMAGED = "meta.json.damaged"  # what a store that failed a check is set aside as


class DamagedCacheError(PrepError):
    """A stored sample does not match its checksum: the store was damaged or altered after
    it was built."""

    @classmethod
    def of(cls, folder: Path, sample: str) -> "DamagedCacheError":
        return cls(
            f"the decoded cache in {folder} is damaged: {sample} does not match its checksum; "
            "it was set aside and the next run builds it again (or use --cache off)"
        )


class StoreCheck(Exception):
    """Why a store on disk is not used (built elsewhere, its index altered): said once,
    then the store is built again."""


def machine_id() -> str:
    """This machine, as its stores record it: ``/etc/machine-id`` where there is one (a
    container's own), else the host name."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text:
            return text
    return socket.gethostname()


def _folder_identity(folder: Path) -> list[int]:
    stat = os.stat(folder)
    return [stat.st_dev, stat.st_ino]


def _sample_checksum(pixels: np.ndarray, mask: np.ndarray | None) -> int:
    """CRC-32 of a sample's stored bytes (zlib's runs at about 4 GB/s and releases the GIL)."""
    crc = zlib.crc32(memoryview(np.ascontiguousarray(pixels)).cast("B"))
    if mask is not None:
        crc = zlib.crc32(memoryview(np.ascontiguousarray(mask)).cast("B"), crc)
    return crc


def _index_digest(index: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(index, dtype=np.int64).tobytes()).hexdigest()


def fingerprint(paths: Sequence[Path]) -> str:
    """A sample's files' bytes, as a BLAKE2b digest: what tells that a file whose size and
    times say nothing still holds what its stored sample was decoded from ("" when a file
    cannot be read)."""
    digest = hashlib.blake2b(digest_size=16)
    for path in paths:
        try:
            with open(path, "rb") as file:
                while chunk := file.read(1 << 20):
                    digest.update(chunk)
        except OSError:
            return ""
        digest.update(b"\0")  # the files' boundaries count
    return digest.hexdigest()


class DecodedStore:
    """A finished store, read by sample index. Pickles as its folder, so that each loader
    worker maps the files itself instead of receiving a copy of them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise StoreCheck("it was made by another version of prep")
        self.decoder_key: str = meta["decoder"]
        self.files: list[list] = meta["files"]  # [[path, ...], [[size, mtime_ns, ctime_ns, inode], ...]] per sample
        self.fingerprints: list[str] = meta["fingerprints"]  # per sample, see fingerprint()
        self.corrupt: dict[int, str] = {int(k): v for k, v in meta["corrupt"].items()}
        self.mask_dtype = np.dtype(meta["mask_dtype"]) if meta["mask_dtype"] else None
        self.nbytes: int = meta["nbytes"]
        self.built_where: dict[str, Any] = meta["built"]
        self.index = np.load(folder / "index.npy", allow_pickle=False)  # offset, height, width, checksum per sample
        if self.index.ndim != 2 or self.index.shape[1] != 4 or self.index.dtype != np.int64:
            raise StoreCheck("its index is not a store's index")
        if _index_digest(self.index) != meta["index_sha256"]:
            raise StoreCheck("its index does not match its checksum")
        if len(self.index) != len(self.fingerprints) or len(self.index) != len(self.files[0]):
            raise StoreCheck("its index and its file list differ in length")
        self._maps: tuple[np.ndarray, np.ndarray | None] | None = None
        self._verified = np.zeros(len(self.index), dtype=bool)  # in this process, see read()

    def built_here(self) -> bool:
        """Whether this store was built on this machine, in this folder: a store copied or
        unpacked here has another inode, and its records cannot be trusted."""
        try:
            return self.built_where == {"machine": machine_id(), "folder": _folder_identity(self.folder)}
        except OSError:
            return False

    def __len__(self) -> int:
        return len(self.index)

    def complete(self) -> bool:
        """Whether the files hold every byte the index points to, and every sample lies
        inside them (a store whose files were cut short, by hand or by a full disk, is
        rebuilt rather than read past its end)."""
        offsets, heights, widths = self.index[:, 0], self.index[:, 1], self.index[:, 2]
        if (offsets < 0).any() or (heights < 0).any() or (widths < 0).any() or (offsets % 3).any():
            return False
        pixels = int((heights * widths).sum())  # corrupt samples are 0 x 0
        masks = pixels * self.mask_dtype.itemsize if self.mask_dtype is not None else 0
        try:
            sizes = [(self.folder / "pixels.u8").stat().st_size, (self.folder / "masks.u8").stat().st_size]
        except OSError:
            return False
        return sizes == [pixels * 3, masks] and bool((offsets + heights * widths * 3 <= sizes[0]).all())

    def verify_all(self) -> None:
        """Read every sample now and check its checksum (``--cache verify``).

        Raises:
            DamagedCacheError: a sample does not match (the store is set aside).
        """
        for index in range(len(self)):
            if index not in self.corrupt:
                self.read(index)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__, _maps=None)
        for name in ("files", "fingerprints"):  # workers read by index; these are for checking freshness
            state.pop(name)
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

        Each sample's checksum is checked the first time this process reads it.

        Raises:
            ImageDecodeError: the file could not be decoded when the store was built.
            DamagedCacheError: the sample's bytes do not match their checksum.
        """
        if index in self.corrupt:
            raise ImageDecodeError(self.corrupt[index])
        offset, height, width, checksum = (int(v) for v in self.index[index])
        pixels, masks = self._mapped()
        image = pixels[offset : offset + height * width * 3].reshape(height, width, 3)
        mask = None
        if masks is not None:
            start = offset // 3
            mask = masks[start : start + height * width].reshape(height, width)
        if not self._verified[index]:
            if _sample_checksum(image, mask) != checksum:
                self.set_aside()
                raise DamagedCacheError.of(self.folder, f"sample {index}")
            self._verified[index] = True  # a race between two threads only checks twice
        return image, mask

    def set_aside(self) -> None:
        """Mark this store as damaged, so that no later run reads it (best effort: a
        read-only disk keeps it, and each run stops at the same sample)."""
        try:
            os.replace(self.folder / "meta.json", self.folder / DAMAGED)
        except OSError:
            pass


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
    """Each sample's files' ``[size, mtime_ns, ctime_ns, inode]``, what tells that a file
    changed: the change time is the kernel's, so a file replaced and given its old
    modification time back still differs."""
    states = []
    for paths in files:
        sample = []
        for path in paths:
            try:
                stat = os.stat(path)
                sample.append([stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino])
            except OSError:
                sample.append([-1, -1, -1, -1])
        states.append(sample)
    return states


def store_folder(base: Path, split: str, decoder_key: str) -> Path:
    digest = hashlib.sha256(f"{FORMAT} {decoder_key}".encode()).hexdigest()[:12]
    return base / f"{split}-{digest}"


def open_store(
    folder: Path, files: Sequence[tuple[Path, ...]], decoder_key: str, states: list | None = None, *, verify: bool = False,
) -> DecodedStore | None:
    """The store in ``folder`` when it is complete, was built here, and holds exactly
    ``files`` as they are now, decoded with ``decoder_key``; else None (a store refused for
    its index or where it was built is said so in the log). ``states``:
    ``file_states(files)``, when the caller has it already. ``verify``: also compare every
    file's bytes with its fingerprint and every sample with its checksum.

    Raises:
        DamagedCacheError: ``verify`` found a stored sample that does not match its checksum.
    """
    store = _finished_store(folder, decoder_key)
    paths = [[str(p) for p in sample] for sample in files]
    if store is None or store.files[0] != paths or store.files[1] != (states or file_states(files)):
        return None
    if verify:
        if store.fingerprints != [fingerprint(sample) for sample in files]:
            return None
        store.verify_all()
    return store


def _finished_store(folder: Path, decoder_key: str) -> DecodedStore | None:
    """The store in ``folder`` when there is a complete one made here with ``decoder_key``."""
    if not (folder / "meta.json").is_file():
        return None
    try:
        store = DecodedStore(folder)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    except StoreCheck as exc:
        log.warning("The decoded cache in %s is not used: %s; it is built again", folder, exc)
        return None
    if not store.built_here():
        log.warning("The decoded cache in %s was not built here (copied or unpacked with the dataset); it is built again", folder)
        return None
    if store.decoder_key != decoder_key:
        return None
    if not store.complete():
        log.warning("The decoded cache in %s is not used: its files are shorter than its index says; it is built again", folder)
        return None
    return store


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
    progress: Progress = NO_PROGRESS, description: str = "Caching decoded images", verify: bool = False,
) -> DecodedStore:
    """Decode every sample of ``files`` with ``decoder`` into a store in ``folder``,
    copying the samples an older store built here holds from the same bytes (``states`` as
    for ``open_store``; ``verify``: every file's bytes are compared with its fingerprint
    before its sample is copied, whatever its state says).

    Raises:
        MaskError and other ``PrepError``: what the decoder raises for bad data (a mask
            value that is no class stops the build as it would stop training).
        OSError: the store cannot be written (the CLI names the path and the cause).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(folder.parent)
    states = states or file_states(files)
    paths = [[str(p) for p in sample] for sample in files]
    copies = _reusable_samples(folder, decoder.key, paths, states, files, verify)
    partial = folder.parent / f"{folder.name}.partial-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        index, corrupt, fingerprints, mask_dtype, nbytes = _write_samples(
            partial, files, copies, decoder, workers, progress, description,
        )
        np.save(partial / "index.npy", index)
        atomic_write_json(partial / "meta.json", {
            "format": FORMAT, "decoder": decoder.key, "files": [paths, states], "fingerprints": fingerprints,
            "index_sha256": _index_digest(index), "corrupt": {str(k): v for k, v in corrupt.items()},
            "mask_dtype": mask_dtype, "nbytes": nbytes, "built_at": time.time(),
            # The folder's inode survives the rename below; a copy of the store gets another.
            "built": {"machine": machine_id(), "folder": _folder_identity(partial)},
        })
        _replace(partial, folder)
        fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return DecodedStore(folder)


def _reusable_samples(folder: Path, decoder_key: str, paths: list, states: list, files: Sequence, verify: bool) -> dict[int, tuple]:
    """The samples an older store in ``folder`` may give the new one: index -> (older
    store, its index, fingerprint). A sample is reused when its files' states are those
    recorded, or, where only the change time or inode moved (a ``chmod``, a restore),
    when their bytes still match the fingerprint. Never from a store built elsewhere."""
    store = _finished_store(folder, decoder_key)
    if store is None:
        return {}
    old_paths, old_states = store.files
    previous = {tuple(p): i for i, p in enumerate(old_paths) if i not in store.corrupt}
    copies = {}
    for i, (sample_paths, state) in enumerate(zip(paths, states)):
        old = previous.get(tuple(sample_paths))
        if old is None:
            continue
        trusted = old_states[old] == state and not verify
        same_size_and_time = [s[:2] for s in old_states[old]] == [s[:2] for s in state]
        if trusted or (same_size_and_time and fingerprint(files[i]) == store.fingerprints[old]):
            copies[i] = (store, old, store.fingerprints[old])
    return copies


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

    def write(self, pixels: np.ndarray, mask: np.ndarray | None) -> tuple[int, int, int, int]:
        """Write one sample; return its index row ``(offset, height, width, checksum)``."""
        height, width = pixels.shape[:2]
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
        with self.next_offset.get_lock():
            offset = self.next_offset.value
            self.next_offset.value += height * width * 3
        pixel_fd, mask_fd = self._files()
        _pwrite_all(pixel_fd, pixels, offset)
        if mask is not None:
            # The decoder's one mask type (an older store copied from has the same key, so
            # the same type): a mask of another size here would corrupt the offsets.
            if mask.dtype != self.mask_dtype:
                raise ValueError(f"a {mask.dtype} mask in a store of {self.mask_dtype} masks")
            mask = np.ascontiguousarray(mask)
            _pwrite_all(mask_fd, mask, offset // 3 * self.mask_dtype.itemsize)
        return offset, height, width, _sample_checksum(pixels, mask)

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
    """A build worker's job: fingerprint, decode and write each sample; ``(index,
    fingerprint, offset, height, width, checksum)`` for each, or ``(index, fingerprint,
    reason)`` for a file that cannot be decoded."""
    rows = []
    for index, paths in chunk:
        digest = fingerprint(paths)  # before decoding: a file changed meanwhile is decoded again next time
        try:
            pixels, mask = decoder(paths)
        except ImageDecodeError as exc:
            rows.append((index, digest, str(exc)))
            continue
        rows.append((index, digest, *_writer.write(pixels, mask)))
    return rows


def _write_samples(partial, files, copies, decoder, workers, progress, description):
    """Write every sample into the store's files: the unchanged ones (``copies``: index ->
    (older store, its index, fingerprint)) copied here, each checked against its checksum
    as it is read, the others decoded and written by worker processes (``imap_chunks``)."""
    global _writer

    mask_dtype = getattr(decoder, "mask_dtype", None)
    index = np.zeros((len(files), 4), dtype=np.int64)
    corrupt: dict[int, str] = {}
    fingerprints = [""] * len(files)
    _writer = writer = _StoreWriter(partial, mask_dtype)
    try:
        with progress.task(description, len(files)) as advance:
            copied = set()
            for i, (store, position, digest) in copies.items():
                try:
                    index[i] = writer.write(*store.read(position))
                except DamagedCacheError:  # the older store is damaged: decode the rest of its samples
                    log.warning("The decoded cache in %s is damaged; its samples are decoded again", store.folder)
                    break
                fingerprints[i] = digest
                copied.add(i)
            if copied:
                advance(len(copied))
            chunks = imap_chunks(
                _decode_and_write, [(i, paths) for i, paths in enumerate(files) if i not in copied], decoder,
                chunk_size=16, workers=workers, min_items=64, advance=advance,
            )
            for rows in chunks:
                for row in rows:
                    fingerprints[row[0]] = row[1]
                    if isinstance(row[2], str):
                        corrupt[row[0]] = row[2]
                    else:
                        index[row[0]] = row[2:]
        nbytes = writer.finish()
    finally:
        _writer = None
    return index, corrupt, fingerprints, (mask_dtype.name if mask_dtype is not None else None), nbytes


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
