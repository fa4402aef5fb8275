"""Running a job over consecutive chunks of a list, in forked worker processes when it pays."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

R = TypeVar("R")


def map_chunks(
    job: Callable[..., R],
    items: Sequence[Any],
    *args: Any,
    chunk_size: int,
    workers: int,
    min_items: int,
    advance: Callable[[int], None] = lambda n: None,
) -> list[R]:
    """``job(chunk, *args)`` for each chunk of ``items``, results in chunk order.

    Processes, not threads: the jobs here are file reads and decodes driven from Python,
    and threads fighting over the GIL ran several times slower than one thread when
    measured. Started with fork, which takes milliseconds; the jobs only read files.

    Args:
        job: a module-level function (it is pickled by name for the workers).
        items: what to split into chunks of ``chunk_size``.
        args: passed to every call after the chunk.
        workers: processes; 1 runs everything here.
        min_items: below this many items, worker start-up costs more than it saves.
        advance: called with each chunk's length as it finishes.
    """
    return list(imap_chunks(job, items, *args, chunk_size=chunk_size, workers=workers, min_items=min_items, advance=advance))


def imap_chunks(
    job: Callable[..., R],
    items: Sequence[Any],
    *args: Any,
    chunk_size: int,
    workers: int,
    min_items: int,
    advance: Callable[[int], None] = lambda n: None,
) -> Iterator[R]:
    """``map_chunks``, yielding each result as soon as it and those before it are done, so
    that a caller writing results away never holds them all (the arguments are the same)."""
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    if workers <= 1 or len(items) < min_items:
        for chunk in chunks:
            result = job(chunk, *args)
            advance(len(chunk))
            yield result
        return
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(os.getpid(),)) as pool:
        for chunk, result in zip(chunks, pool.map(job, chunks, *([a] * len(chunks) for a in args))):
            advance(len(chunk))
            yield result


def _start_worker(parent_pid: int) -> None:
    from prep.util.allocator import keep_freed_memory
    from prep.util.lifetime import die_with_parent

    die_with_parent(parent_pid)  # a killed parent leaves no worker decoding on
    keep_freed_memory()
