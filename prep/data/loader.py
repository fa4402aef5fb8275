"""``create_loader``: a DataLoader set up the way prep's trainers want it.

Workers default to the core count and persist across epochs; memory is pinned only when
batches go to CUDA. The order and every sample's augmentation follow from (seed, epoch,
index) through ``SeededSampler``, so ``--seed`` repeats them and a resumed run replays the
epoch it stopped before; each worker also seeds Python, NumPy and torch. Corrupt images are
dropped from their batch and reported once each, by file name.

The loader also measures itself: each batch carries the seconds its worker spent making it
(decoding, augmenting, collating), so ``ReportingLoader.stats`` tells how many images per
second the loader can make, whatever the model's speed, and how long training waited for it.
"""

from __future__ import annotations

import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import numpy as np
import torch

from prep.data.cache import DamagedCacheError
from prep.data.collate import uint8_channels_last_collate
from prep.data.sampling import SeededSampler
from prep.errors import PluginError, PrepError

log = logging.getLogger(__name__)


class LoaderWorkerError(PrepError):
    """A loader worker process died without raising (killed, or exited)."""


class _SeedWorker:
    """worker_init_fn: a picklable callable, so it also works with spawned workers. Besides
    seeding, it keeps the memory each decoded image frees for the next (``prep.util.allocator``),
    and makes the worker die with the training process (``prep.util.lifetime``)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.parent_pid = os.getpid()

    def __call__(self, worker_id: int) -> None:
        from prep.util.allocator import keep_freed_memory
        from prep.util.lifetime import die_with_parent

        die_with_parent(self.parent_pid)  # torch's workers notice a dead parent only between batches
        keep_freed_memory()
        seed = self.seed + worker_id
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        info = torch.utils.data.get_worker_info()
        transform = getattr(info.dataset, "transform", None) if info else None
        if hasattr(transform, "set_random_seed"):
            transform.set_random_seed(seed)


class TimedBatch(NamedTuple):
    """A batch, and the seconds its worker spent making it."""

    batch: Any
    seconds: float


class _TimedCollate:
    """The collate function, run in the worker, timed together with the samples it was
    given (``TimedSamples.seconds``: their decoding and augmentation)."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any]) -> None:
        self.collate_fn = collate_fn

    def __call__(self, samples: list[Any]) -> TimedBatch:
        began = time.perf_counter()
        batch = self.collate_fn(samples)
        return TimedBatch(batch, getattr(samples, "seconds", 0.0) + time.perf_counter() - began)


@dataclass
class LoaderStats:
    """One epoch of a loader, so far.

    Attributes:
        images: images delivered.
        work_s: seconds the workers spent making them.
        wait_s: seconds the training loop waited for a batch.
        workers: worker processes or threads (0: the training loop's own thread did the work).
        unread: samples left out because their file could not be read (``first_unread``:
            the first one's reason, which starts with its path).
        missing: of those, the files that no longer exist (``first_missing``: the first's
            path): images that vanished during the run.
    """

    images: int = 0
    work_s: float = 0.0
    wait_s: float = 0.0
    workers: int = 0
    unread: int = 0
    missing: int = 0
    first_unread: str | None = None
    first_missing: str | None = None

    @property
    def images_per_s(self) -> float | None:
        """How many images per second the loader makes with all its workers (None before
        the first batch)."""
        if not self.work_s:
            return None
        return self.images * max(self.workers, 1) / self.work_s


def _draws_no_randomness(collate_fn: Callable) -> bool:
    """Whether ``collate_fn`` is one of prep's own, which draw no random numbers: a plugin's
    may draw from torch's global generator, which only worker processes give each their own."""
    from prep.data import collate

    target = getattr(getattr(collate_fn, "__self__", None), "value", collate_fn)  # a Registration's call
    return target in (collate.uint8_channels_last_collate, collate.segmentation_collate, collate.targets_as_list_collate)


class ThreadedLoader:
    """Batches made by threads of this process, for a dataset read from a decoded cache.

    A cached sample costs microseconds of reading and an augmentation whose OpenCV work
    releases the GIL, so threads make batches faster than worker processes: a process's
    batch must cross in a fresh shared-memory segment, whose page faults cost more than
    reading the samples (measured: 2 threads 17,000 images/s, 2 processes 9,500; see
    benchmarks/bench_loader.py). Each thread augments with its own copy of the pipeline,
    and each batch is seeded from its keys (``SeededSampler``), so the batches are exactly
    those worker processes would make.
    """

    def __init__(self, dataset: Any, sampler: SeededSampler, batch_size: int, collate_fn: Callable, threads: int, drop_last: bool, pin_memory: bool, prefetch: int = 4) -> None:
        self.dataset, self.sampler, self.batch_size = dataset, sampler, batch_size
        self.collate_fn, self.num_workers, self.drop_last, self.pin_memory = collate_fn, threads, drop_last, pin_memory
        self.prefetch = prefetch * threads
        self._pool = None

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        from collections import deque

        keys = list(self.sampler)
        groups = [keys[i : i + self.batch_size] for i in range(0, len(keys), self.batch_size)]
        if self.drop_last and groups and len(groups[-1]) < self.batch_size:
            groups.pop()
        pool = self._threads()
        pending = deque(pool.submit(self._make, group) for group in groups[: self.prefetch])
        following = iter(groups[self.prefetch :])
        try:
            while pending:
                batch = pending.popleft().result()
                group = next(following, None)
                if group is not None:
                    pending.append(pool.submit(self._make, group))
                yield batch
        finally:  # an epoch left early: the batches made ahead are not needed
            for future in pending:
                future.cancel()
            for future in pending:
                if not future.cancelled():
                    future.exception()  # wait, so that the next epoch starts clean

    def _threads(self):
        """The threads, started once and kept across epochs (like persistent workers)."""
        if self._pool is None:
            import threading
            from concurrent.futures import ThreadPoolExecutor

            self._local = threading.local()
            self._pool = ThreadPoolExecutor(self.num_workers, thread_name_prefix="prep-loader")
        return self._pool

    def _make(self, group: list) -> Any:
        import copy

        dataset = getattr(self._local, "dataset", None)
        if dataset is None:  # this thread's own pipeline: augmenting draws from it
            dataset = self._local.dataset = copy.copy(self.dataset)
            dataset.transform = copy.deepcopy(self.dataset.transform)
        batch = self.collate_fn(dataset.__getitems__(group))
        if self.pin_memory:
            from torch.utils.data._utils.pin_memory import pin_memory

            batch = pin_memory(batch)
        return batch


class ReportingLoader:
    """Iterates a DataLoader and reports each skipped (corrupt) file once.

    Attributes:
        collate_origin: which collate function makes the batches, and from which plugin,
            for messages about what it returned.
    """

    def __init__(self, loader: "torch.utils.data.DataLoader | ThreadedLoader", sampler: SeededSampler, collate_origin: str = "collate function") -> None:
        self.loader = loader
        self.sampler = sampler
        self.collate_origin = collate_origin
        self.skipped: dict[str, str] = {}
        self.stats = LoaderStats(workers=loader.num_workers)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Choose the epoch whose order and augmentations come next (see SeededSampler);
        its first ``skip_batches`` batches are left out, unread. ``stats`` start again."""
        self.sampler.set_epoch(epoch, start=skip_batches * self.loader.batch_size)
        self.stats = LoaderStats(workers=self.loader.num_workers)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def dataset(self) -> Any:
        return self.loader.dataset

    def __iter__(self) -> Iterator[Any]:
        self.stats = LoaderStats(workers=self.loader.num_workers)  # each pass counts afresh (validation has no set_epoch)
        try:
            yield from self._batches()
        except (PluginError, DamagedCacheError) as exc:
            # From a worker process, the message carries the worker's traceback: keep our line.
            kind = type(exc)
            raise kind(str(exc).rsplit(f"{kind.__name__}: ", 1)[-1].strip()) from None
        except RuntimeError as exc:
            if "exited unexpectedly" not in str(exc):
                raise
            # A worker that died without a word (os._exit in a plugin's code, the kernel's
            # out-of-memory killer): say what ran there.
            raise LoaderWorkerError(
                f"A loader worker died while making a batch ({str(exc).split(': ', 1)[-1].strip()}); it ran "
                f"the dataset and the {self.collate_origin}: a plugin's code that exits the process, or too "
                "little memory for --workers (try fewer)"
            ) from None

    def _batches(self) -> Iterator[Any]:
        batches = iter(self.loader)
        while True:
            began = time.perf_counter()
            try:
                timed = next(batches)
            except StopIteration:
                return
            self.stats.wait_s += time.perf_counter() - began
            batch = timed.batch
            self.stats.work_s += timed.seconds
            self.stats.images += len(getattr(batch, "inputs", ()))
            for corrupt in getattr(batch, "skipped", ()):
                self._count_unread(corrupt)
                if corrupt.path not in self.skipped:
                    self.skipped[corrupt.path] = corrupt.reason
                    # The reason starts with the file's path.
                    log.warning("Skipped an unreadable image: %s", corrupt.reason)
            yield batch


    def _count_unread(self, corrupt: Any) -> None:
        stats = self.stats
        stats.unread += 1
        stats.first_unread = stats.first_unread or corrupt.reason
        if not os.path.lexists(corrupt.path):
            stats.missing += 1
            stats.first_missing = stats.first_missing or corrupt.path


def create_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    *,
    train: bool,
    collate_fn: Callable[[list[Any]], Any] = uint8_channels_last_collate,
    collate_origin: str = "collate function",
    workers: int | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    drop_last: bool = False,
    rank: int = 0,
    world_size: int = 1,
    weights: Sequence[float] | None = None,
) -> ReportingLoader:
    """A loader over ``dataset``.

    Args:
        dataset: returns samples that the named collate function understands.
        batch_size: samples per batch.
        train: shuffle, in an order that depends only on ``seed`` and the epoch.
        collate_fn: turns a list of samples into a batch; it runs in the worker processes,
            so it must pickle (a module-level function, or a registration's ``call``).
        collate_origin: who ``collate_fn`` is, for messages about what it returned
            (``Registration.origin``).
        workers: worker processes; default: all cores; 0 loads in the main process.
        seed: seeds the shuffle and every worker's random state.
        device: where batches will go; memory is pinned only for CUDA.
        drop_last: drop a last, smaller batch (for training, always when it would hold
            a single image).
        rank, world_size: this process's share under torchrun (see ``SeededSampler``).
        weights: one drawing weight per sample (training only): each epoch then draws
            ``len(dataset)`` samples with replacement (``--sampler balanced``).
    """
    workers = os.cpu_count() or 1 if workers is None else workers
    # prep's datasets take (index, sample_seed) keys; any other dataset gets plain indexes.
    sampler = SeededSampler(
        len(dataset), seed=seed, shuffle=train, with_seeds=getattr(dataset, "accepts_sample_seeds", False),
        rank=rank, world_size=world_size, pad=train, weights=weights if train else None,
    )
    if train and batch_size > 1 and len(sampler) % batch_size == 1:
        # A last batch of one image cannot train BatchNorm (one value per channel on small
        # maps is an error) and is noise on any: it is left out, a different one each epoch.
        drop_last = True
    pin_memory = torch.device(device).type == "cuda" if device is not None else False
    cached = getattr(dataset, "cache", None) is not None and hasattr(dataset, "__getitems__")
    if workers > 0 and cached and _draws_no_randomness(collate_fn):
        threaded = ThreadedLoader(dataset, sampler, batch_size, _TimedCollate(collate_fn), workers, drop_last, pin_memory)
        return ReportingLoader(threaded, sampler, collate_origin)
    # The loader's own generator only draws the workers' base seed; giving it one keeps
    # torch's global random state untouched by loading, as an exact resume needs.
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=_TimedCollate(collate_fn),
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
        worker_init_fn=_SeedWorker(seed),
        generator=generator,
        drop_last=drop_last,
        prefetch_factor=4 if workers > 0 else None,
    )
    return ReportingLoader(loader, sampler, collate_origin)
