"""The strata of image/mask pairs: which classes each mask holds, and the class a pair is
stratified by, so that a rare class reaches every split (and every fold) it can.

A pair's stratum is the rarest class its mask holds (the one the fewest masks hold): the
stratified splitter then deals the images of each rare class out over the splits in the
requested proportions, and every split gets at least one of each class held by enough
masks. A class held by fewer masks than there are splits cannot reach them all; its pairs
are stratified by their next rarest class instead, and the report names the splits that
lack it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence

from prep.errors import PrepError
from prep.util.progress import NO_PROGRESS, Progress

COMMON = "-"  # the stratum of pairs that hold no class rare enough to stratify by


def _ids_present(chunk: Sequence[str], table) -> list[tuple[int, ...]]:
    """The ids each mask of ``chunk`` holds, as training reads them (a worker's job); none
    for a mask that cannot be read as ids (the split's own checks report those)."""
    import numpy as np

    from prep.masks.read import mask_ids

    found = []
    for path in chunk:
        try:
            found.append(tuple(int(v) for v in np.unique(mask_ids(Path(path), table))))
        except (PrepError, OSError, ValueError):
            found.append(())
    return found


def mask_ids_present(masks: Sequence[str], table, workers: int, progress: Progress = NO_PROGRESS) -> list[tuple[int, ...]]:
    """The class ids each mask holds, read in parallel."""
    from prep.util.parallel import map_chunks

    with progress.task("Reading masks for the strata", len(masks)) as advance:
        parts = map_chunks(_ids_present, list(masks), table, chunk_size=64, workers=workers, min_items=256, advance=advance)
    return [ids for part in parts for ids in part]


def rarest_class(ids: Sequence[int], holding: Counter) -> str:
    """A segmentation unit's stratum: the id it holds that the fewest masks hold (ties: the
    lowest id), or ``-`` for masks without readable ids."""
    return str(min(ids, key=lambda i: (holding[i], i))) if ids else "-"


def mask_strata(unit_ids: Sequence[Sequence[int]], needed: int) -> list[str]:
    """Each unit's stratum for a split into ``needed`` parts (train and the held-out
    splits): its rarest class among those held by at least ``needed`` units, else
    ``COMMON``; a ``COMMON`` stratum too small to split joins the largest stratum."""
    holding = Counter(i for ids in unit_ids for i in set(ids))
    strata = [rarest_class([i for i in ids if holding[i] >= needed], holding) for ids in unit_ids]
    # A unit whose rarest class is taken by rarer ones may leave that class's stratum short:
    # such units move to their next class, until every stratum can be split.
    while True:
        sizes = Counter(strata)
        short = {s for s, n in sizes.items() if n < needed and s != COMMON}
        if not short:
            break
        for k, (ids, stratum) in enumerate(zip(unit_ids, strata)):
            if stratum in short:
                left = [i for i in ids if holding[i] >= needed and str(i) not in short and sizes[str(i)] >= needed]
                strata[k] = rarest_class(left, holding)
    sizes = Counter(strata)
    if 0 < sizes[COMMON] < needed and len(sizes) > 1:
        largest = max((s for s in sizes if s != COMMON), key=lambda s: (sizes[s], s))
        strata = [largest if s == COMMON else s for s in strata]
    return strata
