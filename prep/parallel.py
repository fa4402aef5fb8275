"""Running a job over consecutive chunks of a list, in forked worker processes when it pays."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    if workers <= 1 or len(items) < min_items:
        results = []
        for chunk in chunks:
            results.append(job(chunk, *args))
            advance(len(chunk))
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    results = []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
        for chunk, result in zip(chunks, pool.map(job, chunks, *([a] * len(chunks) for a in args))):
            results.append(result)
            advance(len(chunk))
    return results
