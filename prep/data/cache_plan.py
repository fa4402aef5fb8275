"""Where a run's decoded cache goes, whether it fits, and attaching it to the datasets.

``--cache`` (``TrainOptions.cache``):

* ``disk``: ``DATA/.prep/cache/<split>-<key>/``, kept for later runs; the operating
  system's page cache holds it in memory when it fits.
* ``ram``: the same files in shared memory (``/dev/shm``), for a dataset on a read-only or
  slow disk (Kaggle's ``/kaggle/input``); removed when the run ends.
* ``auto`` (the default): ``disk`` when the cache fits in half of the free disk, else
  ``ram`` when it fits in half of the available memory, else ``off``, saying why.
* ``verify``: ``auto``, and before a store is used, every source file is read again and
  compared with its fingerprint and every stored sample with its checksum (for a disk whose
  file times cannot be trusted, such as FAT or some network mounts; see ``prep.data.cache``).
* ``off``: every epoch decodes its images again.

A killed run's ``ram`` stores are removed by the next run that uses the cache, before it
counts the memory free (``sweep_shared_memory``).

The size is estimated from image headers before anything is decoded, and shown in the
progress bar's title while the stores are built. Under torchrun, the first process of each
machine builds while the others wait at a barrier, then take what it built.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from prep.errors import PrepError, check_choice
from prep.util.progress import NO_PROGRESS, Progress

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from prep.data.cache import DecodedStore

CACHE_MODES = ("auto", "ram", "disk", "verify", "off")
CACHE_HELP = (
    "auto (disk when it fits in half the free disk, else ram when it fits in half the "
    "available memory, else off) | disk (DATA/.prep/cache, kept for later runs) | ram "
    "(shared memory, for this run) | verify (auto, re-reading every file and stored sample first) | off."
)
SHARE = 0.5  # of the free disk, or of the available memory, that a cache may take
SHARED_MEMORY = Path("/dev/shm")
ESTIMATE_FROM = 256  # images whose headers are read to estimate a store's size


class CacheError(PrepError):
    """A cache that was asked for does not fit where it was asked to go."""


def check_cache(mode: str) -> str:
    """``--cache`` checked against ``CACHE_MODES``."""
    return check_choice("--cache", mode, CACHE_MODES)


@dataclass(frozen=True)
class CachePlan:
    """Where a cache goes, and the words that say so.

    Attributes:
        where: ``disk``, ``ram`` or ``None`` (no cache).
        base: the folder that holds the stores (``None`` without a cache).
        nbytes: the estimated size of every store the run needs.
        reason: why (for ``auto``), in words.
    """

    where: str | None
    base: Path | None
    nbytes: int
    reason: str


def _disk_folder(root: Path) -> Path:
    return root / ".prep" / "cache"


def _ram_base() -> Path:
    return SHARED_MEMORY / f"prep-{os.getuid()}"


def _ram_folder(root: Path) -> Path:
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return _ram_base() / digest


# -- Who holds a ram cache ---------------------------------------------------------------------
# Shared memory outlives a killed process, so each run that uses a dataset's ram stores
# leaves a marker there naming itself (host, pid and the pid's start time, which a reused
# pid does not share); stores that no live run holds are a killed run's, and are removed.

OWNER = "owner-"


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (None: no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22, counted after the command name


def _owner_marker(folder: Path) -> Path:
    return folder / f"{OWNER}{socket.gethostname()}-{os.getpid()}-{_process_start(os.getpid())}"


def _held_by_a_live_run(folder: Path) -> bool:
    host = socket.gethostname()
    for marker in folder.glob(f"{OWNER}*"):
        owner_host, _, rest = marker.name[len(OWNER):].rpartition("-")
        owner_host, _, pid = owner_host.rpartition("-")
        if owner_host != host or not pid.isdigit():
            return True  # another machine's (a shared /dev/shm): not this one's to judge
        if _process_start(int(pid)) == rest:
            return True
    return False


def _hold(folder: Path) -> None:
    """Mark ``folder`` (a dataset's ram stores) as used by this process."""
    for _ in range(3):  # a sweep by another run may remove the folder between the two steps
        folder.mkdir(parents=True, exist_ok=True)
        try:
            _owner_marker(folder).touch()
            return
        except FileNotFoundError:
            continue


def sweep_shared_memory() -> list[Path]:
    """Remove the ram stores that no live run holds (those of runs that were killed), so
    that they are neither left in memory nor counted against the next run's room; return
    what was removed."""
    removed = []
    try:
        folders = [f for f in _ram_base().iterdir() if f.is_dir()]
    except OSError:
        return removed
    for folder in folders:
        if not _held_by_a_live_run(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        log.info("Removed %d decoded cache(s) that killed runs left in %s", len(removed), _ram_base())
    return removed


def _let_go(folder: Path) -> None:
    """This process no longer uses ``folder``'s ram stores: remove them unless another run
    still does."""
    _owner_marker(folder).unlink(missing_ok=True)
    if not _held_by_a_live_run(folder):
        shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:  # not empty (another dataset's cache), or gone
        pass


def _available_memory() -> int:
    """Bytes of memory available to new work (MemAvailable), or 0 when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


def _free_space(folder: Path) -> int:
    """Free bytes on the file system that holds (or would hold) ``folder``; 0 when it
    cannot be written."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        return 0
    return shutil.disk_usage(existing).free


def human_bytes(n: float) -> str:
    """``n`` bytes in decimal units (``720.3 MB``)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def plan_cache(mode: str, root: Path, nbytes: int, reusable: int = 0) -> CachePlan:
    """Where the run's stores go (see the module docstring), given their estimated size.

    Args:
        mode: ``--cache``.
        root: the dataset.
        nbytes: the estimated size of the stores the run needs.
        reusable: of those bytes, how many are already on disk in up-to-date stores.

    Raises:
        CacheError: ``disk`` or ``ram`` was asked for and the cache does not fit there.
    """
    check_cache(mode)
    size = human_bytes(nbytes)
    if mode == "off":
        return CachePlan(None, None, nbytes, "off (--cache off)")
    disk, ram = _disk_folder(root), _ram_folder(root)
    disk_room = SHARE * _free_space(disk) + reusable
    ram_room = SHARE * min(_available_memory(), _free_space(SHARED_MEMORY) if SHARED_MEMORY.is_dir() else 0)
    if mode == "disk":
        if nbytes > disk_room:
            raise CacheError(f"--cache disk: the decoded cache needs about {size}, and half the free space under {disk.parent} is {human_bytes(disk_room - reusable)}; use --cache ram, or --cache off")
        return CachePlan("disk", disk, nbytes, "disk (--cache disk)")
    if mode == "ram":
        if nbytes > ram_room:
            raise CacheError(f"--cache ram: the decoded cache needs about {size}, and half the available memory is {human_bytes(ram_room)}; use --cache disk, or --cache off")
        return CachePlan("ram", ram, nbytes, "ram (--cache ram)")
    if nbytes <= disk_room:
        return CachePlan("disk", disk, nbytes, f"disk ({mode}: it fits in half the free disk)")
    if nbytes <= ram_room:
        return CachePlan("ram", ram, nbytes, f"ram ({mode}: the disk is read-only or too full, and it fits in half the available memory)")
    return CachePlan(None, None, nbytes, (
        f"off ({mode}: it would need about {size}, and half the free disk is {human_bytes(disk_room)}, "
        f"half the available memory {human_bytes(ram_room)}; every epoch decodes again)"
    ))


def estimate_bytes(files: Sequence[tuple[Path, ...]], decoder: Any) -> int:
    """The size of a store of ``files`` decoded by ``decoder``, from the headers of up to
    ``ESTIMATE_FROM`` evenly spaced images."""
    from PIL import Image

    from prep.images.decode import shrunk_size

    if not files:
        return 0
    step = max(1, len(files) // ESTIMATE_FROM)
    chosen = files[::step]
    mask_dtype = getattr(decoder, "mask_dtype", None)
    per_pixel = 3 + (mask_dtype.itemsize if mask_dtype is not None else 0)
    total, read = 0, 0
    for paths in chosen:
        try:
            with Image.open(paths[0]) as image:
                width, height = image.size
        except Exception:  # noqa: BLE001 - a file Pillow cannot open costs nothing in a store
            continue
        width, height = shrunk_size(width, height, decoder.side)
        total += width * height * per_pixel
        read += 1
    return round(total / read * len(files)) if read else 0


@dataclass
class CacheReport:
    """What the run's cache is: ``where`` (``disk``, ``ram`` or None), its size, the
    stores by split, how long building took (0 when every store was reused), and why."""

    where: str | None
    reason: str
    nbytes: int = 0
    stores: dict[str, "DecodedStore"] = field(default_factory=dict)
    built_s: float = 0.0
    reused: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line for the run's header."""
        if self.where is None:
            return self.reason
        folder = next(iter(self.stores.values())).folder.parent if self.stores else None
        how = f"built in {self.built_s:.1f} s" if not self.reused else (
            "reused" if len(self.reused) == len(self.stores) else f"{', '.join(self.reused)} reused, the rest built in {self.built_s:.1f} s"
        )
        return f"{self.reason}, {human_bytes(self.nbytes)} in {folder} ({how})"

    def release(self) -> None:
        """Remove what lives only for this run (a ``ram`` cache), unless another live run
        uses it too."""
        if self.where == "ram":
            for folder in {store.folder.parent for store in self.stores.values()}:  # prep-<uid>/<dataset>
                _let_go(folder)


def release_ram_cache(root: Path) -> None:
    """Remove the ``ram`` stores of ``root``'s dataset, which runs that keep their cache
    (``prep.train.train(keep_cache=True)``, the folds of a cross-validation) left."""
    _let_go(_ram_folder(root))


def _cacheable(dataset: Any) -> bool:
    return hasattr(dataset, "decoder") and hasattr(dataset, "sample_files") and hasattr(dataset.decoder, "key")


POOL = "pool"  # the store name of a cross-validation's pool (every fold's samples)


def cache_datasets(
    mode: str, root: Path, datasets: dict[str, Any], *, pools: dict[str, Any] | None = None, workers: int | None = None,
    builds: bool = True, progress: Progress = NO_PROGRESS,
) -> CacheReport:
    """Attach a decoded store to each of ``datasets`` (split -> dataset), building those
    that are missing or stale; see the module docstring for ``mode``.

    Args:
        pools: split -> a dataset that holds all of that split's samples, decoded the same
            way: the split's store is then the pool's, and the split reads its own samples
            from it. The folds of a cross-validation pass the whole training pool, so that
            one store serves every fold.
        builds: this process may build the stores. Under torchrun only the first process
            of each machine does; the others, called after it has finished, use the
            stores it left and read the files themselves where it left none (the batches
            are the same either way, so no process ever waits on another's cache).
        workers: processes that decode while building (default: all cores).

    Raises:
        CacheError: ``disk`` or ``ram`` was asked for and the cache does not fit there.
        OSError: a store cannot be written (the CLI names the path and the cause).
    """
    from prep.data.cache import DamagedCacheError, build_store, file_states, open_store, store_folder

    check_cache(mode)
    if mode == "off":
        return CacheReport(None, "off (--cache off)")
    sweep_shared_memory()
    verify = mode == "verify"
    cacheable = {split: d for split, d in datasets.items() if _cacheable(d) and len(d)}
    pools = {split: pool for split, pool in (pools or {}).items() if split in cacheable and _cacheable(pool)}
    if not cacheable:
        return CacheReport(None, "off (this task's datasets cannot be cached)")
    sources = {split: pools.get(split, d) for split, d in cacheable.items()}
    names = {split: POOL if split in pools else split for split in cacheable}
    files = {split: [d.sample_files(i) for i in range(len(d))] for split, d in sources.items()}
    keys = {split: d.decoder.key for split, d in sources.items()}
    states = {split: file_states(files[split]) for split in sources}  # one stat of each file

    def up_to_date(base: Path, split: str) -> "DecodedStore | None":
        folder = store_folder(base, names[split], keys[split])
        try:
            return open_store(folder, files[split], keys[split], states[split], verify=verify)
        except DamagedCacheError:
            log.warning("The decoded cache in %s failed its check (--cache verify); it is built again", folder)
            return None

    def attach(split: str, store: "DecodedStore") -> None:
        dataset = cacheable[split]
        dataset.cache = store if split not in pools else store.subset(_positions(files[split], dataset))

    if not builds:
        if _ram_folder(root).is_dir():  # the first process's ram stores: held while this one reads them
            _hold(_ram_folder(root))
        return _attach_built(root, cacheable, up_to_date, attach)
    on_disk = {split: up_to_date(_disk_folder(root), split) for split in cacheable}
    if mode in ("auto", "disk", "verify") and all(store is not None for store in on_disk.values()):
        for split, store in on_disk.items():
            attach(split, store)
        nbytes = sum(store.nbytes for store in _distinct(on_disk.values()))
        return CacheReport("disk", f"disk ({'--cache disk' if mode == 'disk' else mode})", nbytes, dict(on_disk), reused=list(on_disk))
    estimates = {split: estimate_bytes(files[split], sources[split].decoder) for split in cacheable}
    reusable = sum(store.nbytes for store in _distinct(s for s in on_disk.values() if s is not None))
    needed = {store_folder(Path(), names[split], keys[split]): estimates[split] for split in cacheable}
    plan = plan_cache(mode, root, sum(needed.values()), reusable)
    if plan.where is None:
        return CacheReport(None, plan.reason, plan.nbytes)
    report = CacheReport(plan.where, plan.reason)
    if plan.where == "ram":
        _hold(plan.base)  # before building, so that another run's sweep leaves it alone
    began = time.perf_counter()
    built: dict[Path, "DecodedStore"] = {}  # by folder: the pools of train and valid are one store when decoded alike
    reused: set[Path] = set()
    for split in cacheable:
        folder = store_folder(plan.base, names[split], keys[split])
        store = built.get(folder) or (on_disk[split] if plan.where == "disk" else up_to_date(plan.base, split))
        if folder in built:
            pass
        elif store is not None:
            reused.add(folder)
        else:
            what = "the folds' images" if split in pools else f"{split} images"
            description = f"Caching {what} at {_side(sources[split])} (about {human_bytes(estimates[split])}, {plan.where})"
            processes = max(1, workers if workers is not None else os.cpu_count() or 1)  # --workers 0: this process
            store = build_store(
                folder, files[split], sources[split].decoder, workers=processes, states=states[split], progress=progress,
                description=description, verify=verify,
            )
        if folder not in built:
            report.nbytes += store.nbytes
        if folder in reused:
            report.reused.append(split)
        built[folder] = store
        attach(split, store)
        report.stores[split] = store
    report.built_s = time.perf_counter() - began if len(reused) < len(built) else 0.0
    return report


def _distinct(stores) -> list["DecodedStore"]:
    """Each store once (two splits may share one)."""
    return list({store.folder: store for store in stores}.values())


def _positions(pool_files: list[tuple[Path, ...]], dataset: Any) -> list[int]:
    """Where each of ``dataset``'s samples is in its pool's store.

    Raises:
        PrepError: a sample that the pool lacks (a task whose fold datasets do not list their
            samples through the fold's index).
    """
    where = {tuple(map(str, paths)): i for i, paths in enumerate(pool_files)}
    positions = []
    for i in range(len(dataset)):
        paths = tuple(map(str, dataset.sample_files(i)))
        if paths not in where:
            raise PrepError(f"{paths[0]} is not among the cross-validation's training images, so its fold cannot read it from the shared cache")
        positions.append(where[paths])
    return positions


def _attach_built(root: Path, datasets: dict[str, Any], up_to_date: Any, attach: Any) -> CacheReport:
    """Attach the up-to-date stores another process built, on disk or in memory
    (``up_to_date(base, split)``: the split's store under ``base``, or None)."""
    report = CacheReport(None, "off (the first process of this machine built no cache)")
    for where, base in (("disk", _disk_folder(root)), ("ram", _ram_folder(root))):
        for split in datasets:
            store = None if split in report.stores else up_to_date(base, split)
            if store is not None:
                attach(split, store)
                report.stores[split] = store
                report.where, report.reason = where, f"{where} (built by the first process of this machine)"
                report.reused.append(split)
    report.nbytes = sum(store.nbytes for store in _distinct(report.stores.values()))
    return report


def _side(dataset: Any) -> str:
    side = dataset.decoder.side
    return f"{side} px" if side else "full resolution"
